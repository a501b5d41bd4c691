"""The shared cache, and the store of rate-limit counters: Redis, falling back to process memory.

``CACHES["default"]`` is :class:`resilience.cache.backend.FallbackCache`. When Redis fails (refused, timed out,
or refusing commands), the first failed call opens a per-process circuit and is answered from this process's
memory; every later call skips Redis without paying a timeout; a background probe PINGs Redis every second
and switches back when it answers. Counters kept in memory meanwhile are not merged back: a client's count
restarts in whichever store serves it. Rate limits keep being enforced throughout (each worker counts its
share of the limit while in memory, see :mod:`resilience.ratelimit`); a cached value is simply a miss. The
operator switch ``ratelimit.force_memory`` keeps every worker in memory, Redis or not. Without ``REDIS_URL``
the cache is memory only.

Why this is written here rather than installed: no maintained package does it. Without help, django-ratelimit
turns a Redis ``ConnectionError`` into a 500 whatever ``RATELIMIT_FAIL_OPEN`` says (its issue #333);
django-redis's ``IGNORE_EXCEPTIONS`` returns None instead (django-ratelimit then refuses everyone, or with
``RATELIMIT_FAIL_OPEN`` no one) and still pays the timeout on every call; ``django-cache-fallback`` (0.4)
catches every exception on every call with no circuit, so each call pays the Redis timeout, and wraps only
part of the cache API.
"""

from resilience.cache.backend import FallbackCache

__all__ = ["FallbackCache", "cache_state"]


def cache_state(alias: str = "default") -> dict:
    """The state of a cache for health checks: which store serves, the circuit, the operator switch."""
    from django.core.cache import caches

    cache = caches[alias]
    if isinstance(cache, FallbackCache):
        return cache.snapshot()
    return {"backend": type(cache).__name__, "redis_configured": False, "breaker": None, "forced_memory": False}
