"""What a Redis round trip was for, told by the key it touches: the label of ``bulwark_redis_round_trips_total``.

Every part of the layer that keeps state in Redis names its keys with a prefix of its own (before the cache's
``KEY_PREFIX:VERSION:``, which :func:`purpose_for` never sees: it gets the caller's key). The table is here, not in
each part, because the cache must not import the parts that use it; ``tests/resilience/cache`` checks that every
part's prefix is listed.
"""

from __future__ import annotations

RATE_LIMITS = "rate_limits"
WORKER_SNAPSHOTS = "worker_snapshots"
CACHE_PROBE = "cache_probe"
OTHER = "other"

# caller's key prefix -> purpose; the first that matches wins
PREFIXES: tuple[tuple[str, str], ...] = (
    ("rl:", RATE_LIMITS),  # django-ratelimit's RATELIMIT_CACHE_PREFIX (resilience.ratelimit)
    ("breaker:", "breaker_state"),  # resilience.breakers.shared
    ("dbnode:", "node_trips"),  # resilience.db.trips
    ("bulwark:read-after:", "read_your_writes"),  # resilience.db.consistency
    ("auth:refresh-used:", "replay_guards"),  # resilience.auth.replay
    ("staff:", "staff_sessions"),  # resilience.staff.sessions and .otp
    ("bulwark.staff.audit:", "staff_audit"),  # resilience.staff.audit
)
PURPOSES: tuple[str, ...] = (*dict.fromkeys(purpose for _, purpose in PREFIXES), WORKER_SNAPSHOTS, CACHE_PROBE, OTHER)


def purpose_for(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    for prefix, purpose in PREFIXES:
        if text.startswith(prefix):
            return purpose
    return OTHER
