"""A breaker's state shared by the fleet through the shared cache: Redis, or this process's memory without it.

Three keys per breaker (``breaker:<name>:...``):

- ``failures``: consecutive failures counted by every worker (an atomic ``incr``; a success anywhere deletes it);
- ``opened``: the wall-clock time the breaker last opened; present = open for the fleet. Each worker reads it
  at most once a second (on its next call), so when one worker opens the breaker every worker skips the
  dependency within about a second; a successful trial deletes it and every worker closes;
- ``trial``: the lease of the one half-open trial the fleet sends at a time (``add`` with the reset timeout as
  its expiry, so a trial whose worker died stops blocking after that long).

The keys live in ``CACHES["default"]``, :class:`resilience.cache.FallbackCache`: when Redis is down the same
calls are answered from this process's memory, so counting, state and trials fall back to per-worker, as a
breaker without sharing behaves. No call here raises for a cache failure: the fallback cache absorbs it.
"""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from resilience.cache import FallbackCache

KEY_PREFIX = "breaker:"


class SharedBreakerState:
    """The fleet's view of one breaker (see the module docstring); used by :class:`CircuitBreaker`."""

    def __init__(self, name: str, *, reset_timeout: float, cache_alias: str = "default") -> None:
        self.name = name
        self.reset_timeout = reset_timeout
        self.cache_alias = cache_alias
        self._failures = f"{KEY_PREFIX}{name}:failures"
        self._opened = f"{KEY_PREFIX}{name}:opened"
        self._trial = f"{KEY_PREFIX}{name}:trial"
        # An open breaker is forgotten by the fleet after this long without a trial (no traffic): the next
        # failures open it again.
        self._ttl = max(3600, int(reset_timeout * 10))

    @property
    def _cache(self) -> BaseCache:
        return caches[self.cache_alias]

    def fleet_wide(self) -> bool:
        """Whether the other workers see these keys now (Redis answers), or only this process."""
        cache = self._cache
        return not isinstance(cache, FallbackCache) or not cache.uses_memory()

    def record_failure(self) -> int:
        """Count one failure; the consecutive failures of the fleet so far (this one included)."""
        cache = self._cache
        for _attempt in range(2):
            try:
                return int(cache.incr(self._failures))
            except ValueError:  # no counter yet (or the store switched to memory mid-way): start one
                cache.add(self._failures, 0, self._ttl)
        return 1

    def record_success(self) -> None:
        self._cache.delete(self._failures)

    def opened_at(self) -> float | None:
        """The wall-clock time the fleet's breaker opened, or None when it is closed."""
        value = self._cache.get(self._opened)
        return float(value) if isinstance(value, int | float) else None

    def publish_open(self, at: float) -> None:
        """The breaker opened at wall-clock time ``at`` (threshold reached, or a trial failed): tell the fleet."""
        cache = self._cache
        cache.set(self._opened, at, self._ttl)
        cache.delete_many([self._failures, self._trial])

    def publish_closed(self) -> None:
        """A trial succeeded: the dependency is back for the whole fleet."""
        self._cache.delete_many([self._opened, self._failures, self._trial])

    def try_trial(self) -> bool:
        """Take the fleet's one half-open trial; False when another worker holds it."""
        return bool(self._cache.add(self._trial, 1, max(1, int(self.reset_timeout))))

    def end_trial(self) -> None:
        self._cache.delete(self._trial)
