"""Each place a resilience state changes records its event: nodes down, up and promoted, a breaker's state, a
signing key, an operator switch, Redis lost and found (the rate limits' store)."""

from __future__ import annotations

import pytest
from django.db import transaction

from resilience.auth.services import key_revoke, key_rotate
from resilience.breakers.breaker import CircuitOpenError
from resilience.breakers.exceptions import ExternalServerError
from resilience.breakers.registry import breaker_get, reset_breakers
from resilience.cache import FallbackCache
from resilience.controls.services import control_set
from resilience.controls.state import READ_ONLY
from resilience.db.nodes import PRIMARY, NodeRegistry, registry
from resilience.events import events_flush
from resilience.events.models import ResilienceEvent
from resilience.guard_rails import quiet
from tests.factories import UserFactory
from tests.helpers import poll
from tests.redis_servers import RedisProcess, dead_redis_url
from tests.resilience.events.conftest import buffered

REPLICA = "replica_1"
BREAKER = "payment_gateway"


def _probe(alias: str, *, in_recovery: bool) -> None:
    registry().record_probe(alias, in_recovery=in_recovery, lag_seconds=0, lag_bytes=0, replay_lsn=None)


# ---- database nodes ------------------------------------------------------------------------------------------


def test_a_node_marked_down_and_up_records_both() -> None:
    registry().mark_down(REPLICA, "connection refused")
    registry().mark_down(REPLICA, "connection refused")  # still down: no second event
    [down] = buffered("db_node_down")
    assert (down.subject, down.severity) == (REPLICA, "warning")
    assert "connection refused" in down.message and down.detail["error"] == "connection refused"
    _probe(REPLICA, in_recovery=True)
    [up] = buffered("db_node_up")
    assert up.subject == REPLICA and up.severity == "info" and up.at >= down.at


def test_the_primary_down_is_an_error() -> None:
    registry().mark_down(PRIMARY, "killed")
    [down] = buffered("db_node_down")
    assert (down.subject, down.severity) == (PRIMARY, "error")


def test_a_replica_answering_as_primary_is_a_failover() -> None:
    _probe(REPLICA, in_recovery=True)
    _probe(REPLICA, in_recovery=True)
    assert buffered("db_failover") == []  # the same role: nothing
    _probe(REPLICA, in_recovery=False)  # promoted
    [failover] = buffered("db_failover")
    assert failover.subject == REPLICA and failover.detail == {"role": "primary", "configured_role": "replica"}
    assert "primary" in failover.message


def test_a_silenced_scratch_registry_records_nothing() -> None:
    """A guard rail's scratch copy fails on purpose (resilience.guard_rails.quiet): not an outage to record."""
    scratch = NodeRegistry([REPLICA], max_lag_seconds=30)
    with quiet("resilience.db"):
        scratch.mark_down(REPLICA, "guard rail: simulated failure")
    assert buffered("db_node_down") == []
    scratch.mark_down(PRIMARY, "not silenced")
    assert len(buffered("db_node_down")) == 1


# ---- breakers ------------------------------------------------------------------------------------------------


@pytest.fixture
def breakers(settings):
    settings.BULWARK_BREAKERS = {BREAKER: {"failure_threshold": 2, "reset_timeout": 30}}
    reset_breakers()
    yield
    reset_breakers()


def _fail() -> None:
    raise ExternalServerError(BREAKER, 500, "synthetic")


@pytest.mark.usefixtures("breakers")
def test_a_breaker_opening_records_its_state_change() -> None:
    breaker = breaker_get(BREAKER)
    with pytest.raises(ExternalServerError):
        breaker.call(_fail)
    assert buffered("breaker_state_changed") == []  # one failure: still closed
    with pytest.raises(ExternalServerError):
        breaker.call(_fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    [opened] = buffered("breaker_state_changed")
    assert (opened.subject, opened.severity) == (BREAKER, "warning")
    assert (opened.detail["from_state"], opened.detail["to_state"]) == ("closed", "open")
    assert "2 consecutive failures" in opened.detail["reason"]


# ---- operator switches and signing keys (recorded once committed) ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_control_change_is_recorded_when_committed() -> None:
    operator = UserFactory(username="operator")
    control_set(key=READ_ONLY, enabled=True, actor=operator, reason="maintenance window")
    [changed] = buffered("control_changed")
    assert (changed.subject, changed.severity) == (READ_ONLY, "warning")
    assert "operator" in changed.message and "maintenance window" in changed.message
    assert changed.detail == {"enabled": True, "previous": None, "actor": "operator", "reason": "maintenance window"}
    control_set(key=READ_ONLY, enabled=False, actor=operator)
    assert buffered("control_changed")[-1].detail["previous"] is True
    assert events_flush() >= 2
    assert ResilienceEvent.objects.filter(kind="control_changed", subject=READ_ONLY).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_control_change_rolled_back_is_not_recorded() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        control_set(key=READ_ONLY, enabled=True, actor=None)
        raise RuntimeError("rolled back")
    assert buffered("control_changed") == []


@pytest.mark.django_db(transaction=True)
def test_signing_key_changes_are_recorded() -> None:
    key = key_rotate(reason="scheduled")
    rotated = buffered("signing_key_changed")
    assert key.kid in {event.subject for event in rotated}
    mine = next(event for event in rotated if event.subject == key.kid)
    assert mine.detail["action"] == "rotate" and mine.detail["state"] == "active" and mine.severity == "info"
    key_revoke(kid=key.kid, reason="leaked")
    revoked = buffered("signing_key_changed")[-1]
    assert (revoked.subject, revoked.severity, revoked.detail["state"]) == (key.kid, "warning", "revoked")
    assert "revoke" in revoked.message


# ---- Redis (the cache and the rate limits) -----------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_circuits")
def test_redis_lost_and_found_is_recorded() -> None:
    server = RedisProcess()
    server.start()
    try:
        cache = FallbackCache(server.url, {"KEY_PREFIX": "events", "OPTIONS": {"PROBE_INTERVAL": 0.1}})
        cache.set("k", 1)
        assert buffered("cache_redis_down") == []
        server.kill()
        cache.set("k", 2)  # fails over to memory
        [down] = buffered("cache_redis_down")
        assert down.subject == cache.circuit.name and down.severity == "warning"
        assert down.detail["operation"] == "set" and "memory" in down.message
        server.start()
        poll(lambda: buffered("cache_redis_up"), timeout=10, interval=0.05)
        [up] = buffered("cache_redis_up")
        assert up.subject == down.subject and up.at > down.at
    finally:
        server.kill()


@pytest.mark.usefixtures("fresh_circuits")
def test_a_silenced_scratch_cache_records_nothing() -> None:
    with quiet("resilience.cache"):
        scratch = FallbackCache(dead_redis_url(), {"OPTIONS": {"PROBE_INTERVAL": 60}})
        scratch.set("k", 1)
        assert scratch.uses_memory()
    assert buffered("cache_redis_down") == []
