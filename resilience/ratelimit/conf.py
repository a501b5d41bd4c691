"""The rate limiter's settings, read once, and its cache, looked up once per thread: the request path reads neither
through Django's lazy objects.

Why: ``django.conf.settings`` is a lazy object, so every attribute read is a Python-level ``__getattribute__`` and a
``getattr``, and ``caches[alias]`` goes through the cache handler's context-local storage (``asgiref.local.Local``):
the limiter read nine settings and looked the cache up once or twice per request, about a fifth of its work on a
product read (cProfile call counts, instructions under callgrind). Settings change at run time only under
``override_settings`` (and pytest-django's ``settings`` fixture, which uses it): it sends ``setting_changed``, and
both are dropped then, so the next read sees the new values (a changed ``CACHES`` included).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed


@dataclass(frozen=True)
class LimitSettings:
    enabled: bool  # RATELIMIT_ENABLE
    rates: Mapping[str, tuple[int, int] | None]  # RATELIMIT_RATES: scope -> (requests, seconds), None = off
    trusted_proxy_count: int  # RATELIMIT_TRUSTED_PROXY_COUNT
    workers: int  # RATELIMIT_WORKERS
    cache_alias: str  # RATELIMIT_USE_CACHE
    key_settings: tuple[str, object]  # what django-ratelimit's key names read: its prefix and hash


_current: LimitSettings | None = None
_threads = threading.local()  # per thread, as Django's own handler keeps caches: the FallbackCache in use


def limit_settings() -> LimitSettings:
    current = _current
    return current if current is not None else _read()


def _read() -> LimitSettings:
    global _current
    _current = LimitSettings(
        enabled=bool(settings.RATELIMIT_ENABLE),
        rates=dict(getattr(settings, "RATELIMIT_RATES", {}) or {}),
        trusted_proxy_count=int(getattr(settings, "RATELIMIT_TRUSTED_PROXY_COUNT", 0)),
        workers=max(1, int(getattr(settings, "RATELIMIT_WORKERS", 1))),
        cache_alias=settings.RATELIMIT_USE_CACHE,
        key_settings=(
            getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:"),
            getattr(settings, "RATELIMIT_HASH_ALGORITHM", None),
        ),
    )
    return _current


def limit_cache() -> Any:
    """The cache the counters live in (``caches[RATELIMIT_USE_CACHE]``), this thread's instance."""
    cache = getattr(_threads, "cache", None)
    if cache is None:
        cache = _threads.cache = caches[limit_settings().cache_alias]
    return cache


def _drop(**_: Any) -> None:
    global _current, _threads
    _current = None
    _threads = threading.local()


setting_changed.connect(_drop, dispatch_uid="resilience.ratelimit.conf")
