"""The fallback cache's two stores, counted with django-prometheus's cache metrics.

``FallbackCache`` (``resilience.cache``) is the configured ``BACKEND``; the stores it wraps are counted, each
under its own ``backend`` label: ``redis`` (django-prometheus's django-redis subclass: gets, hits, misses and
failures; a failure is then answered from memory) and ``memory`` (process memory: gets, hits, misses).
django-prometheus's own LocMemCache returns ``default`` for a falsy cached value (``cached or default``), which
would turn a stored 0 into a miss, so the memory store is counted here instead.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django_prometheus.cache.backends.redis import RedisCache as CountedRedisCache
from django_prometheus.cache.metrics import django_cache_get_total, django_cache_hits_total, django_cache_misses_total

__all__ = ["CountedMemoryCache", "CountedRedisCache"]

_MISSING = object()


class CountedMemoryCache(LocMemCache):
    """Django's LocMemCache, its gets counted as ``backend="memory"``."""

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        django_cache_get_total.labels(backend="memory").inc()
        cached = super().get(key, _MISSING, version=version)
        if cached is _MISSING:
            django_cache_misses_total.labels(backend="memory").inc()
            return default
        django_cache_hits_total.labels(backend="memory").inc()
        return cached
