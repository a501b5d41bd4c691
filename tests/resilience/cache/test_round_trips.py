"""Every Redis round trip the layer makes is counted, by purpose (``bulwark_redis_round_trips_total``), against the
test stack's Redis; a call answered from memory is not one."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches

from resilience.auth import replay
from resilience.breakers import shared
from resilience.cache.purposes import PREFIXES, PURPOSES, purpose_for
from resilience.controls.state import PRIMARY_ONLY_READS, RATELIMIT_FORCE_MEMORY, controls_replace
from resilience.db import consistency, trips
from resilience.db.context import RoutingState, routing
from resilience.observability.metrics import REDIS_ROUND_TRIPS
from resilience.staff import audit, otp, sessions

pytestmark = pytest.mark.usefixtures("fresh_circuits")


def trips_of(purpose: str) -> float:
    return REDIS_ROUND_TRIPS.labels(purpose=purpose)._value.get()


def test_every_part_that_keeps_state_in_redis_has_its_purpose() -> None:
    keys = {
        "breaker_state": shared.KEY_PREFIX + "payments:failures",
        "node_trips": trips.SharedNodeTrips._key("replica1"),
        "read_your_writes": consistency._user_key(7),
        "replay_guards": replay.KEY_PREFIX + "some-jti",
        "staff_sessions": sessions.CACHE_PREFIX + "7",
        "staff_audit": audit._cache_key("failures:someone"),
        "rate_limits": "rl:" + "0" * 64,
    }
    assert {purpose: purpose_for(key) for purpose, key in keys.items()} == {purpose: purpose for purpose in keys}
    assert purpose_for(otp.KEY_PREFIX + "totp:1:2") == "staff_sessions"
    assert purpose_for("anything else") == "other"
    assert set(PURPOSES) >= {purpose for _, purpose in PREFIXES} | {"worker_snapshots", "cache_probe", "other"}


def test_a_cache_call_is_one_round_trip_of_its_purpose_and_none_in_memory() -> None:
    cache = caches["default"]
    user = uuid.uuid4().hex
    before = trips_of("read_your_writes")
    consistency.remember_user_lsn(user, 42)
    assert consistency.user_lsn(user) == 42
    assert trips_of("read_your_writes") - before == 2
    controls_replace([(PRIMARY_ONLY_READS, True), (RATELIMIT_FORCE_MEMORY, True)])
    try:
        before = trips_of("other")
        cache.set(f"memory-{user}", 1)
        assert cache.get(f"memory-{user}") == 1
        assert trips_of("other") == before  # answered from memory: no round trip
    finally:
        controls_replace([(PRIMARY_ONLY_READS, True)])


def test_outside_the_routing_middleware_the_user_s_write_position_is_not_read() -> None:
    user = uuid.uuid4().hex
    consistency.remember_user_lsn(user, 500)
    before = trips_of("read_your_writes")
    consistency.apply_user_read_after(user)  # no routing state (the baseline settings, a command)
    assert trips_of("read_your_writes") == before
    state = RoutingState()
    with routing(state):
        consistency.apply_user_read_after(user)
    assert state.min_lsn == 500 and trips_of("read_your_writes") - before == 1
