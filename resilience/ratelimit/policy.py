"""Which requests are counted, against what, and what a client is told.

Counting (:mod:`resilience.ratelimit.counting`) keeps django-ratelimit's windows and keys: in Redis every scope of a
request in one script (one round trip at most, none for the global ``api`` scope while this worker's lease lasts),
in memory django-ratelimit's core (``get_usage``), against the cache from ``RATELIMIT_USE_CACHE``, our
:class:`~resilience.cache.backend.FallbackCache`. The library's own failure handling is never reached: the cache
does not raise when Redis fails, it answers from memory. What this module adds:

- the scopes and their keys (client IP behind trusted proxies, user, username from the JSON body or the admin's
  form); a caller may count by a key of its own (:func:`enforce`'s ``keys``, e.g. the second factor's user);
- the per-worker share in memory mode: while counters live in each process, each of the ``WEB_CONCURRENCY``
  workers allows ``ceil(limit / workers)``, so a client spread over every worker still gets about ``limit``;
- one retry when the store switched during the count: a Redis script that failed (counted again in memory),
  a switch between the library's ``add`` and ``incr`` in memory (the count is then unknown and the library would
  refuse the request), or before it (the count went to the other mode's counter); a second such count lets the
  request through, logged;
- ``429 rate_limited`` with ``Retry-After`` and the ``RateLimit-*`` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from resilience.ratelimit.client_ip import client_ip
from resilience.ratelimit.conf import limit_cache, limit_settings
from resilience.ratelimit.counting import Pending, Usage, count_in_memory, count_in_redis
from resilience.ratelimit.exceptions import RateLimitedError

logger = logging.getLogger("resilience.ratelimit")

# scope -> what it counts by: "ip", "user", "username" (from the API's JSON body), "form_username" (the ``username``
# field of a POSTed HTML form) or "client" (user, else IP). Every scope but ``api`` is counted exactly on the shared
# store; ``api`` from leases (counting.LEASED_SCOPES: never over its limit, up to 5 % under); in memory at the worker
# share while Redis is down.
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


def worker_share(limit: int, workers: int) -> int:
    """One process's share of ``limit`` when ``workers`` processes count separately: ceil, at least 1."""
    workers = max(1, workers)
    return max(1, -(-limit // workers))


def counts_in_memory() -> bool:
    """Whether the counters live in this process right now (no Redis, Redis down, or forced by the operator)."""
    uses_memory = getattr(limit_cache(), "uses_memory", None)
    return bool(uses_memory()) if uses_memory is not None else False


def _key(kind: str, request: Any) -> str | None:
    if kind in ("client", "user"):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        if kind == "user":
            return None
        kind = "ip"  # "client": an anonymous request counts by its address
    if kind == "ip":
        meta = getattr(request, "_request", request).META  # the Django request's: DRF's would forward it in Python
        return "ip:" + client_ip(meta, limit_settings().trusted_proxy_count)
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


def _pending(request: Any, scope: str, key: str | None) -> Pending | None:
    rate = limit_settings().rates.get(scope)
    if rate is None:
        return None
    value = key if key is not None else scope_key(request, scope)
    if value is None:
        return None
    return Pending(scope, value, *rate)


def count(request: Any, scope: str, key: str | None = None) -> Usage | None:
    """Count this request against ``scope`` (by ``key`` when given, else the scope's own key); None when the scope
    is off, has no key here, or could not count."""
    return count_scopes(request, [scope], {scope: key} if key is not None else None).get(scope)


def count_scopes(request: Any, scopes: Sequence[str], keys: Mapping[str, str] | None = None) -> dict[str, Usage | None]:
    """Count this request against each of ``scopes`` in order, in one Redis round trip at most (none for a leased
    scope served from this worker's lease), stopping after the first one exceeded: scope -> its usage (None: off,
    no key here, or not counted); the scopes after the first exceeded are absent."""
    usages: dict[str, Usage | None] = {}
    pending: list[Pending] = []
    for scope in scopes:
        item = _pending(request, scope, (keys or {}).get(scope))
        if item is None:
            usages[scope] = None
        else:
            pending.append(item)
    if not pending:
        return usages
    if not counts_in_memory():
        counted = count_in_redis(request, pending)
        if counted is not None:
            for item in pending:
                if item.scope in counted:
                    usages[item.scope] = counted[item.scope]
            return usages
        # Redis failed on this very call: the circuit is open now, and nothing was counted -- count in memory.
    for item in pending:
        usage = _count_in_memory(request, item)
        usages[item.scope] = usage
        if usage is not None and usage.exceeded:
            break
    return usages


def _count_in_memory(request: Any, item: Pending) -> Usage | None:
    for _attempt in range(2):
        in_memory = counts_in_memory()
        if not in_memory:
            # Redis is back since the count began: count in it (one scope, exactly).
            counted = count_in_redis(request, [item])
            if counted is not None:
                return counted.get(item.scope)
            continue
        counted_here = count_in_memory(request, item, worker_share(item.limit, limit_settings().workers))
        if counts_in_memory() != in_memory:
            # The store switched during this count. The library's key names the rate, so it went to the share's
            # counter in the wrong store: count again in the store now in use, or the first count after a switch
            # would be free.
            continue
        if counted_here is not None:  # None = the library could not read the count (the store switched mid-way)
            return counted_here
    logger.warning(
        "rate limit %s not counted for this request (the counter store kept switching); let through",
        item.scope,
        extra={"event": "ratelimit_uncounted", "scope": item.scope},
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
    if not limit_settings().enabled:
        return {}
    counted = _counted(request)
    todo = [scope for scope in scopes if scope not in counted]
    if todo:
        counted.update(count_scopes(request, todo, keys))
    tightest: Usage | None = None
    for scope in scopes:
        usage = counted.get(scope)
        if usage is None:
            continue
        if usage.exceeded:
            raise RateLimitedError(scope=scope, limit=usage.limit, window=usage.window, reset=usage.reset)
        if tightest is None or (usage.remaining, -usage.reset) < (tightest.remaining, -tightest.reset):
            tightest = usage
    return tightest.headers() if tightest is not None else {}
