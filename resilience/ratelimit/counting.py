"""Counting one request against all its scopes: at most one Redis round trip, most requests none.

django-ratelimit's core (``get_usage``) counts one scope with two round trips (``add``, then ``incr``) and builds
its key each time; a request with three scopes paid six. In Redis the keys and windows stay the library's
(``_get_window``: a fixed window with per-key jitter; ``_make_cache_key``: the same key names), but every scope a
request needs counted in Redis is counted by one Lua script, in order, stopping at the first one exceeded (as
the library would have refused there): one ``EVALSHA`` per request at most. In memory (Redis down, or forced)
the library's core counts, at the worker share, as before (:func:`count_in_memory`).

**Leased scopes** (:data:`LEASED_SCOPES`: only the global ``api`` limit; never the security scopes, which are
counted exactly on every request) do not go to Redis on every request: a worker takes a *lease* of
:func:`lease_size` requests from the shared counter in one ``INCRBY`` (inside the same script) and serves the
next requests of that client from it, touching no network. The counter only ever grants what is left under the
limit, so the limit is never exceeded across workers. What a lease costs is the other way round: requests a
worker leased but did not serve before the window ended are lost, so a client may be refused up to
``(workers - 1) * (lease - 1)`` requests before its limit -- at most :data:`LEASE_SHARE` (5 %) of it -- when its
requests are spread over the workers. Only one thread per worker and key leases at a time (another counts
exactly meanwhile), so that bound holds with threads too. ``RateLimit-Remaining`` of a leased scope is what this
worker knew at its last lease. ``tests/resilience/ratelimit/test_leases.py`` checks the bound.

A request served from a lease is on the hot path of every read, so it does no more than it must: the lease is
found by scope, client and rate (the counter's key name, django-ratelimit's window and its SHA-256 key are computed only
when the worker goes to Redis), and :class:`Pending` and :class:`Usage` are named tuples, not frozen dataclasses
(whose ``__init__`` sets every field through ``object.__setattr__``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django_ratelimit import ALL
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, get_usage

from resilience.cache.backend import IN_MEMORY
from resilience.cache.purposes import RATE_LIMITS
from resilience.ratelimit.conf import limit_cache, limit_settings

LEASED_SCOPES = frozenset({"api"})
LEASE_SHARE = 0.05  # every worker's lease together: at most this share of a limit
LEASE_MAX = 100  # requests per lease, whatever the limit (what a worker that dies can take with it)
_MAX_LEASES = 50_000  # kept per worker before the leases of ended windows are dropped

# KEYS: the counters, in order; ARGV: per key (how many to take: 1, or a lease; the limit; the TTL). Stops after
# the first key that had nothing left before this take (the library refuses there and counts no further scope).
COUNT_SCRIPT = """
local totals = {}
for i, key in ipairs(KEYS) do
  local take = tonumber(ARGV[3 * i - 2])
  local total = redis.call('INCRBY', key, take)
  if total == take then redis.call('EXPIRE', key, ARGV[3 * i]) end
  totals[i] = total
  if total - take >= tonumber(ARGV[3 * i - 1]) then break end
end
return totals
"""


class Pending(NamedTuple):
    """One scope of a request to count: its rate-limit group, key value (``ip:…``, ``user:…``) and rate."""

    scope: str
    value: str
    limit: int
    window: int  # seconds


class Usage(NamedTuple):
    """How a scope counted this request: ``count`` is its number in the window (over ``limit``: refused)."""

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


def lease_size(limit: int, workers: int) -> int:
    """Requests one worker takes from the shared counter at a time: every worker's unused lease together stays under
    ``LEASE_SHARE`` of the limit; 1 (exact counting) for small limits."""
    return max(1, min(LEASE_MAX, int(limit * LEASE_SHARE) // max(1, workers)))


def _reset(window_end: int) -> int:
    # time_left counts whole seconds to the window's last second, which still belongs to it: one more is when a new
    # window has begun for sure (so Retry-After is never too early).
    return max(1, window_end - int(time.time()) + 1)


# A lease is the scope's, the client's and the rate's: (scope, key value, limit, window), the Pending itself. A
# changed rate counts on a counter of its own, as django-ratelimit's key names the rate.
LeaseKey = tuple[str, str, int, int]


@dataclass
class _Lease:
    window_end: int  # the window's last second (django-ratelimit's _get_window); it began after window_end - window
    # (the window's length is the key's: LeaseKey)
    stock: int  # requests left to serve from it
    next_count: int  # the number the next one gets in the window (as this worker knows it)


class Leases:
    """This worker's leases, per scope, client and rate (one lease each, of the window it was taken in). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[LeaseKey, _Lease] = {}
        self._leasing: set[LeaseKey] = set()  # keys a thread of this worker is leasing for now

    def take(self, key: LeaseKey, now: int) -> tuple[int, int] | None:
        """This request's number from a live lease and the second its window ends, or None (no lease, spent, or
        taken in another window than ``now``'s)."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.stock <= 0 or not lease.window_end - key[3] < now <= lease.window_end:
                return None
            lease.stock -= 1
            lease.next_count += 1
            return lease.next_count - 1, lease.window_end

    def claim(self, key: LeaseKey) -> bool:
        """Whether this thread may lease for ``key`` now (no other thread of this worker is); if not, it counts this
        one request exactly, so a worker never holds two leases' leftovers of one key."""
        with self._lock:
            if key in self._leasing:
                return False
            self._leasing.add(key)
            return True

    def release(self, key: LeaseKey) -> None:
        with self._lock:
            self._leasing.discard(key)

    def store(self, key: LeaseKey, window_end: int, stock: int, next_count: int) -> None:
        with self._lock:
            if len(self._leases) >= _MAX_LEASES:
                now = int(time.time())
                live = {k: lease for k, lease in self._leases.items() if lease.window_end >= now}
                if len(live) >= _MAX_LEASES // 2:  # that many clients in one window: forget the oldest half too
                    live = dict(list(live.items())[len(live) // 2 :])  # (their leftovers are lost: under, not over)
                self._leases = live
            self._leases[key] = _Lease(window_end, stock, next_count)


leases = Leases()


@functools.lru_cache(maxsize=4096)
def _counter_key(scope: str, window_end: int, limit: int, window: int, value: str, key_settings: object) -> str:
    """django-ratelimit's key for this scope, client and window, computed once per window (it reads two settings and
    hashes with SHA-256 each time). The prefix and the hash the library reads (``key_settings``) are part of the
    memo's key: a changed setting is never missed."""
    return _make_cache_key(f"bulwark.{scope}", window_end, (limit, window), value, ALL)


@dataclass
class _Slot:
    pending: Pending
    key: str
    window_end: int
    take: int
    leasing: bool  # this thread claimed the key's lease (released after the call)


def count_in_redis(request: Any, pending: Sequence[Pending]) -> dict[str, Usage] | None:
    """Count ``pending`` against the shared counters (leased scopes from this worker's lease where it can): one
    script for all that need Redis. None when the cache is in memory now (the caller counts there). A scope after
    the first one refused is not counted (absent from the result)."""
    conf = limit_settings()
    results: dict[str, Usage] = {}
    slots: list[_Slot] = []
    now = int(time.time())
    for item in pending:
        take, leasing = 1, False
        if item.scope in LEASED_SCOPES:
            size = lease_size(item.limit, conf.workers)
            if size > 1:
                served = leases.take(item, now)
                if served is not None:
                    number, window_end = served
                    results[item.scope] = Usage(item.scope, item.limit, item.window, number, window_end - now + 1)
                    continue
                if leases.claim(item):
                    take, leasing = size, True
        window_end = _get_window(item.value, item.window)
        key = _counter_key(item.scope, window_end, item.limit, item.window, item.value, conf.key_settings)
        slots.append(_Slot(item, key, window_end, take, leasing))
    if not slots:
        return results
    try:
        totals = limit_cache().run_script(
            COUNT_SCRIPT,
            [slot.key for slot in slots],
            [arg for slot in slots for arg in (slot.take, slot.pending.limit, slot.pending.window + EXPIRATION_FUDGE)],
            purpose=RATE_LIMITS,
        )
        if totals is IN_MEMORY:
            return None
        for slot, total in zip(slots, totals, strict=False):  # the script stops after the first refused
            results[slot.pending.scope] = _counted(slot, int(total))
    finally:
        for slot in slots:
            if slot.leasing:
                leases.release(slot.pending)
    return results


def _counted(slot: _Slot, total: int) -> Usage:
    item = slot.pending
    before = total - slot.take  # the window's count before this take
    granted = max(0, min(slot.take, item.limit - before))
    if granted == 0:
        return Usage(item.scope, item.limit, item.window, max(total, item.limit + 1), _reset(slot.window_end))
    if slot.leasing and granted > 1:
        leases.store(item, slot.window_end, stock=granted - 1, next_count=before + 2)
    return Usage(item.scope, item.limit, item.window, before + 1, _reset(slot.window_end))


def count_in_memory(request: Any, item: Pending, share: int) -> Usage | None:
    """Count one scope with django-ratelimit's core in the cache as it is now (memory, at ``share``). None when the
    library could not read the count (limit 0: the store switched between its ``add`` and ``incr``)."""
    usage = get_usage(
        request,
        group=f"bulwark.{item.scope}",
        key=lambda group, req: item.value,
        rate=(share, item.window),
        increment=True,
    )
    if usage is None or not usage["limit"]:
        return None
    return Usage(item.scope, share, item.window, int(usage["count"]), max(1, int(usage["time_left"]) + 1))
