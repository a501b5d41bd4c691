"""Staff log-ins on record: every admin log-in, failed log-in and refusal is a resilience event; bursts are flagged.

Django's ``user_logged_in`` and ``user_login_failed`` signals (connected by :func:`audit_connect`, called from
``ResilienceConfig.ready``) are recorded when the request went to the admin (``request.path`` under its URL): the
API's token log-ins (no request) and the test client's ``force_login`` (an empty path) are not staff log-ins. The
limiter (:mod:`resilience.staff.login`) records its refusals here too. Kinds (``STAFF_LOGIN_KINDS``):

- ``staff_login``: a successful admin log-in;
- ``staff_login_failed``: wrong credentials, an inactive account, or (reported by the form through
  :func:`staff_login_failure_record`) a right password of an account that is not staff;
- ``staff_login_refused``: over a limit; recorded once per client key and limit window (every refusal is counted
  in the metric), so a flood of cheap refused POSTs cannot push other events out of the bounded event buffer;
- ``staff_login_burst``: the ``BURST_FAILURES``-th failure for one username within ``BURST_WINDOW`` seconds (a
  fixed window from its first failure), once per window, logged as a warning.

Each event: ``subject`` = the username as typed (cut to 150 characters), ``detail`` = ``ip`` (the client address
as the rate limiter sees it: behind ``TRUSTED_PROXY_COUNT`` proxies, IPv6 per /64), ``user_agent`` (cut),
``user_id`` (null when no account has that username), ``outcome``. The password is never read: only the username
is taken from the signal's (already cleansed) credentials.

When a dependency fails: events are buffered in the worker and written by the monitor while the primary answers
(:mod:`resilience.events`: no database call here, never raised); the user id of a failed log-in is read through
the router (a replica while the primary is down) and left null, logged, when no node answers; the failure counts
for bursts live in ``caches["default"]``, which answers from this worker's memory while Redis is down (a burst is
then counted per worker).

Metrics (prometheus_client's default registry): ``bulwark_staff_logins_total{outcome}`` (success, failure,
refused) and ``bulwark_staff_login_bursts_total``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, user_logged_in, user_login_failed
from django.core.cache import caches
from django.db import DatabaseError
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from prometheus_client import Counter

from resilience.events import event_record
from resilience.ratelimit.client_ip import client_ip

logger = logging.getLogger("resilience.staff")

USERNAME_MAX = 150  # Django's username length: what is longer was not a username
USER_AGENT_MAX = 300
BURST_FAILURES = 5  # failures for one username ...
BURST_WINDOW = 300  # ... within this many seconds (from the first) make a burst
CACHE_ALIAS = "default"
OUTCOMES = ("success", "failure", "refused")

STAFF_LOGINS = Counter("bulwark_staff_logins_total", "Admin log-in attempts by outcome.", ["outcome"])
STAFF_LOGIN_BURSTS = Counter(
    "bulwark_staff_login_bursts_total", "Bursts of failed admin log-ins for one account (once per burst window)."
)
for _outcome in OUTCOMES:
    STAFF_LOGINS.labels(outcome=_outcome)  # exported at 0 from the start


def audit_connect() -> None:
    """Connect the receivers (idempotent: each has its own dispatch uid)."""
    user_logged_in.connect(_logged_in, dispatch_uid="resilience.staff.audit.logged_in")
    user_login_failed.connect(_login_failed, dispatch_uid="resilience.staff.audit.login_failed")


def is_admin_request(request: HttpRequest | None) -> bool:
    """Whether ``request`` went to the admin site (the only log-ins audited here); False without an admin URL."""
    path = getattr(request, "path", "") or ""
    if not path:
        return False
    try:
        return path.startswith(reverse("admin:index"))
    except NoReverseMatch:  # a URLconf without the admin (some tests): nothing here is an admin log-in
        return False


def staff_login_failure_record(
    request: HttpRequest | None, *, username: str, user: Any = None, outcome: str = "failure"
) -> None:
    """Record a failed admin log-in of ``username`` (``user`` when known; ``outcome`` says why, e.g. ``not_staff``
    for a right password of a customer account) and count it towards a burst. For the login form: Django sends no
    signal when the password is right but the form refuses the account."""
    if not is_admin_request(request):
        return
    typed = _typed(username)
    user_id = user.pk if user is not None else _user_id(typed)
    context = _context(request, user_id=user_id, outcome=outcome)
    STAFF_LOGINS.labels(outcome="failure").inc()
    logger.info(
        "staff log-in failed for %r from %s (%s)",
        typed,
        context["ip"],
        outcome,
        extra={"event": "staff_login_failed", "username": typed, "client_ip": context["ip"], "outcome": outcome},
    )
    event_record(
        "staff_login_failed",
        subject=typed,
        message=f"Admin log-in failed for {typed!r} from {context['ip']} ({outcome})",
        detail=context,
    )
    _count_towards_burst(typed, context)


def staff_login_refused_record(
    request: HttpRequest, *, username: str, scope: str, key: str | None, retry_after: int, form: str
) -> None:
    """Record a refusal by the rate limit (``scope`` exceeded for ``key``; ``form``: login, password_change, otp).
    Counted every time; recorded as an event once per ``key`` and window (the first refusal of the window)."""
    typed = _typed(username)
    STAFF_LOGINS.labels(outcome="refused").inc()
    if key is not None and not _first_in_window(f"refused:{scope}:{key}", retry_after):
        return
    context = _context(request, user_id=None, outcome="refused")
    context.update(scope=scope, form=form, retry_after=retry_after)
    logger.warning(
        "staff %s refused for %r from %s: over the %s limit for %d s",
        form,
        typed,
        context["ip"],
        scope,
        retry_after,
        extra={"event": "staff_login_refused", "username": typed, "client_ip": context["ip"], "scope": scope},
    )
    event_record(
        "staff_login_refused",
        subject=typed,
        severity="warning",
        message=f"Admin {form} refused for {typed!r} from {context['ip']}: over the {scope} limit, for {retry_after} s",
        detail=context,
    )


def _logged_in(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    if user is None or not is_admin_request(request):
        return
    typed = _typed(user.get_username())
    context = _context(request, user_id=user.pk, outcome="success")
    STAFF_LOGINS.labels(outcome="success").inc()
    logger.info(
        "staff log-in of %r from %s",
        typed,
        context["ip"],
        extra={"event": "staff_login", "username": typed, "client_ip": context["ip"]},
    )
    event_record(
        "staff_login", subject=typed, message=f"Admin log-in of {typed!r} from {context['ip']}", detail=context
    )


def _login_failed(sender: Any, credentials: dict[str, Any] | None = None, request: Any = None, **kwargs: Any) -> None:
    """Django's signal: the credentials come cleansed (the password starred); only the username is read."""
    credentials = credentials or {}
    username = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username", ""))
    staff_login_failure_record(request, username=username if isinstance(username, str) else "")


def _typed(username: object) -> str:
    return str(username or "")[:USERNAME_MAX]


def _context(request: Any, *, user_id: Any, outcome: str) -> dict[str, Any]:
    meta = getattr(request, "META", {}) or {}
    return {
        "ip": client_ip(meta, settings.RATELIMIT_TRUSTED_PROXY_COUNT),
        "user_agent": str(meta.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX],
        "user_id": user_id,
        "outcome": outcome,
    }


def _user_id(username: str) -> int | None:
    """The id of the account with this username, read through the router; None when there is none or no node
    answers (the event is still recorded)."""
    if not username:
        return None
    model = get_user_model()
    try:
        return model._default_manager.filter(**{model.USERNAME_FIELD: username}).values_list("pk", flat=True).first()
    except DatabaseError as exc:
        logger.info("staff log-in audit: user id of %r not read (%s); recorded without it", username, exc)
        return None


def _cache_key(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:32]  # any text, one fixed-size key
    return f"bulwark.staff.audit:{digest}"


def _first_in_window(name: str, seconds: int) -> bool:
    """True the first time ``name`` is seen within ``seconds`` (shared cache, this worker's memory without Redis)."""
    return bool(caches[CACHE_ALIAS].add(_cache_key(name), 1, timeout=max(1, seconds)))


def _count_towards_burst(username: str, context: dict[str, Any]) -> None:
    """Count one failure for ``username``; at exactly ``BURST_FAILURES`` in the window, record the burst."""
    account = username.strip().lower()
    if not account:
        return
    cache, key = caches[CACHE_ALIAS], _cache_key(f"failures:{account}")
    if cache.add(key, 1, timeout=BURST_WINDOW):
        failures = 1
    else:
        try:
            failures = cache.incr(key)
        except ValueError:  # expired (or the store switched) between add and incr: a fresh window
            cache.add(key, 1, timeout=BURST_WINDOW)
            failures = 1
    if failures != BURST_FAILURES:
        return
    STAFF_LOGIN_BURSTS.inc()
    logger.warning(
        "burst of failed staff log-ins: %d for %r within %d s (the last from %s)",
        failures,
        username,
        BURST_WINDOW,
        context["ip"],
        extra={"event": "staff_login_burst", "username": username, "failures": failures, "client_ip": context["ip"]},
    )
    event_record(
        "staff_login_burst",
        subject=username,
        severity="warning",
        message=f"{failures} failed admin log-ins for {username!r} within {BURST_WINDOW // 60} min",
        detail={**context, "outcome": "burst", "failures": failures, "window_seconds": BURST_WINDOW},
    )
