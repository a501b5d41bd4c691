"""The limiter's settings snapshot and per-thread cache (resilience.ratelimit.conf): read once, yet never stale."""

from __future__ import annotations

import threading

from django.core.cache import caches
from django.test import RequestFactory, override_settings

from resilience.ratelimit.conf import limit_cache, limit_settings
from resilience.ratelimit.policy import enforce


def test_a_changed_setting_is_seen_by_the_next_read() -> None:
    before = limit_settings()
    assert limit_settings() is before  # read once
    with override_settings(RATELIMIT_ENABLE=not before.enabled, RATELIMIT_WORKERS=7):
        changed = limit_settings()
        assert (changed.enabled, changed.workers) == (not before.enabled, 7)
    assert limit_settings().enabled == before.enabled and limit_settings().workers == before.workers


def test_enforce_obeys_a_switch_made_after_it_ran() -> None:
    factory = RequestFactory()
    with override_settings(
        RATELIMIT_ENABLE=True,
        RATELIMIT_RATES={"api": (5, 3600)},
        RATELIMIT_WORKERS=1,
        RATELIMIT_TRUSTED_PROXY_COUNT=0,
        CACHES={"default": {"BACKEND": "resilience.cache.backend.FallbackCache", "LOCATION": ""}},
        RATELIMIT_USE_CACHE="default",
    ):
        headers = enforce(factory.get("/api/products/", REMOTE_ADDR="10.77.0.1"), ["api"])
        assert headers["RateLimit-Limit"] == "5"
        with override_settings(RATELIMIT_ENABLE=False):
            assert enforce(factory.get("/api/products/", REMOTE_ADDR="10.77.0.1"), ["api"]) == {}
        with override_settings(RATELIMIT_RATES={"api": (9, 3600)}):
            assert enforce(factory.get("/api/products/", REMOTE_ADDR="10.77.0.2"), ["api"])["RateLimit-Limit"] == "9"


def test_each_thread_uses_its_own_cache_instance_as_django_keeps_them() -> None:
    mine = limit_cache()
    assert mine is caches[limit_settings().cache_alias]
    seen: list[object] = []

    def other() -> None:
        seen.append(limit_cache() is caches[limit_settings().cache_alias])
        seen.append(limit_cache())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=10)
    assert seen[0] is True and seen[1] is not mine


def test_a_changed_cache_setting_gives_the_new_cache() -> None:
    before = limit_cache()
    memory_only = {"BACKEND": "resilience.cache.backend.FallbackCache", "LOCATION": ""}
    with override_settings(CACHES={"default": memory_only, "limits-elsewhere": memory_only}):
        with override_settings(RATELIMIT_USE_CACHE="limits-elsewhere"):
            assert limit_cache() is caches["limits-elsewhere"]
            assert limit_cache() is not before
    assert limit_cache() is caches[limit_settings().cache_alias]
