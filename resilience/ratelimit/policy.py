"""Which requests are counted, against what, and what a client is told.

Counting is django-ratelimit's core (``django_ratelimit.core.get_usage``: a fixed window per key with
per-key jitter, ``cache.add`` then ``cache.incr``) against the cache from ``RATELIMIT_USE_CACHE``, our
:class:`~resilience.cache.backend.FallbackCache`. The library's own failure handling is never reached:
the cache does not raise when Redis fails, it answers from memory. What we add around the core:

- the scopes and their keys (client IP behind trusted proxies, user, username from the JSON body or the admin's
  form); a caller may count by a key of its own (:func:`enforce`'s ``keys``, e.g. the second factor's user);
- the per-worker share in memory mode: while counters live in each process, each of the ``WEB_CONCURRENCY``
  workers allows ``ceil(limit / workers)``, so a client spread over every worker still gets about ``limit``;
- one retry when the store switched during the count: between the library's ``add`` and ``incr`` (the count is
  then unknown and the library would refuse the request), or before it (the count went to the other mode's
  counter); a second such count lets the request through, logged;
- ``429 rate_limited`` with ``Retry-After`` and the ``RateLimit-*`` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django_ratelimit.core import get_usage

from resilience.ratelimit.client_ip import client_ip
from resilience.ratelimit.exceptions import RateLimitedError

logger = logging.getLogger("resilience.ratelimit")

# scope -> what it counts by: "ip", "user", "username" (from the API's JSON body), "form_username" (the ``username``
# field of a POSTed HTML form) or "client" (user, else IP). Every scope is counted exactly (one add/incr per request
# on the shared store), in memory at the worker share while Redis is down.
SCOPES: dict[str, str] = {
    "api": "client",
    "login": "ip",
    "login_user": "username",
    # The admin's HTML forms (resilience.staff.login): log-in and password change (by the signed-in user), every POST.
    "admin_login": "ip",
    "admin_login_user": "form_username",
    "otp": "user",  # the second factor (resilience.staff.otp passes the user itself when not signed in yet)
    "register": "ip",
    "refresh": "ip",
    "checkout": "user",
}


@dataclass(frozen=True)
class Usage:
    scope: str
    limit: int
    window: int  # seconds
    count: int
    reset: int  # seconds until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


def worker_share(limit: int, workers: int) -> int:
    """One process's share of ``limit`` when ``workers`` processes count separately: ceil, at least 1."""
    workers = max(1, workers)
    return max(1, -(-limit // workers))


def counts_in_memory() -> bool:
    """Whether the counters live in this process right now (no Redis, Redis down, or forced by the operator)."""
    cache = caches[settings.RATELIMIT_USE_CACHE]
    uses_memory = getattr(cache, "uses_memory", None)
    return bool(uses_memory()) if uses_memory is not None else False


def _key(kind: str, request: Any) -> str | None:
    if kind == "ip":
        return "ip:" + client_ip(request.META, settings.RATELIMIT_TRUSTED_PROXY_COUNT)
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    if kind == "user":
        return f"user:{user.pk}" if authenticated else None
    if kind == "client":
        return f"user:{user.pk}" if authenticated else _key("ip", request)
    if kind == "username":
        data = request.data  # parsed once; a malformed body raises parse_error here, as it would in the view
        return username_key(data.get("username") if hasattr(data, "get") else None)
    if kind == "form_username":
        return username_key(request.POST.get("username") if request.method == "POST" else None)
    raise ValueError(f"unknown rate-limit key kind {kind!r}")


def username_key(username: object) -> str | None:
    """The key of a username-counted scope: one per account whatever the spelling the client sends (case,
    surrounding blanks); None for no username."""
    return f"username:{username.strip().lower()[:150]}" if isinstance(username, str) and username.strip() else None


def scope_key(request: Any, scope: str) -> str | None:
    """What ``scope`` counts this request by (``ip:…``, ``user:…``, ``username:…``); None when it has no key here."""
    return _key(SCOPES[scope], request)


def count(request: Any, scope: str, key: str | None = None) -> Usage | None:
    """Count this request against ``scope`` (by ``key`` when given, else the scope's own key); None when the scope
    is off, has no key here, or could not count."""
    rate = settings.RATELIMIT_RATES.get(scope)
    if rate is None:
        return None
    value = key if key is not None else scope_key(request, scope)
    if value is None:
        return None
    limit, window = rate
    for _attempt in range(2):
        in_memory = counts_in_memory()
        share = worker_share(limit, settings.RATELIMIT_WORKERS) if in_memory else limit
        usage = get_usage(
            request, group=f"bulwark.{scope}", key=lambda group, req: value, rate=(share, window), increment=True
        )
        if usage is None:
            return None  # RATELIMIT_ENABLE is off
        if counts_in_memory() != in_memory:
            # The store switched during this count (most often: this very call met Redis down and was answered from
            # memory). The library's key names the rate, so it went to the full limit's counter, not the share's:
            # count again in the store now in use, or the first attempt after a switch would be free.
            continue
        if usage["limit"]:  # limit 0 = the library could not read the count (the store switched mid-way)
            # time_left counts whole seconds to the window's last second, which still belongs to it: one more is
            # when a new window has begun for sure (so Retry-After is never too early), between 1 and the window.
            return Usage(scope, share, window, int(usage["count"]), max(1, int(usage["time_left"]) + 1))
    logger.warning(
        "rate limit %s not counted for this request (the counter store kept switching); let through",
        scope,
        extra={"event": "ratelimit_uncounted", "scope": scope},
    )
    return None


def _counted(request: Any) -> dict[str, Usage | None]:
    """What this request was already counted as, per scope, kept on the Django request itself: the database
    middleware may run a request again (it met a failed node), and a re-run must not be counted twice."""
    django_request = getattr(request, "_request", request)
    memo = getattr(django_request, "_ratelimit_counted", None)
    if memo is None:
        memo = {}
        django_request._ratelimit_counted = memo
    return memo


def enforce(request: Any, scopes: Sequence[str], *, keys: Mapping[str, str] | None = None) -> dict[str, str]:
    """Count the request against each scope in order (once per request, re-runs included), by ``keys[scope]`` when
    given, else the scope's own key; raise ``RateLimitedError`` at the first one exceeded (later scopes are then not
    counted). Returns the ``RateLimit-*`` headers of the tightest scope."""
    if not settings.RATELIMIT_ENABLE:
        return {}
    counted = _counted(request)
    usages = []
    for scope in scopes:
        if scope not in counted:
            counted[scope] = count(request, scope, (keys or {}).get(scope))
        usage = counted[scope]
        if usage is None:
            continue
        if usage.exceeded:
            raise RateLimitedError(scope=scope, limit=usage.limit, window=usage.window, reset=usage.reset)
        usages.append(usage)
    if not usages:
        return {}
    return min(usages, key=lambda usage: (usage.remaining, -usage.reset)).headers()
