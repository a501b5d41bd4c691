"""Node trips shared through the test stack's Redis: two registries play two workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from resilience.db.nodes import PRIMARY, NodeRegistry
from resilience.db.trips import SharedNodeTrips
from tests.redis_servers import dead_redis_cache

pytestmark = pytest.mark.usefixtures("fresh_circuits")


@pytest.fixture
def replica() -> Iterator[str]:
    alias = f"replica-{uuid.uuid4().hex[:8]}"  # keys no other test (or worker of a server) uses
    yield alias
    SharedNodeTrips().clear([alias])


def worker(replica: str, cache_alias: str = "default") -> NodeRegistry:
    nodes = NodeRegistry([replica], max_lag_seconds=30, trips=SharedNodeTrips(cache_alias), trip_sync_seconds=0.0)
    nodes.probing = True  # as its running monitor sets it
    return nodes


def probed_ok(registry: NodeRegistry, alias: str) -> None:
    registry.record_probe(alias, in_recovery=True, lag_seconds=0.0, lag_bytes=0, replay_lsn=None)


def test_a_node_one_worker_found_dead_is_skipped_by_the_others_at_once(replica):
    a, b = worker(replica), worker(replica)
    probed_ok(a, replica)
    probed_ok(b, replica)
    a.mark_down(replica, "connection refused")
    assert b.readable_replicas() == []
    assert b.may_connect(replica) is False
    assert "reported down by another worker" in b.state(replica).last_error
    assert b.may_connect(PRIMARY) is True  # only the node that was reported


def test_an_own_probe_after_the_trip_brings_the_node_back_and_the_old_trip_is_ignored(replica):
    a, b = worker(replica), worker(replica)
    a.mark_down(replica, "connection refused")
    assert b.may_connect(replica) is False
    probed_ok(b, replica)  # b's monitor finds it answering
    assert b.may_connect(replica) is True
    assert b.readable_replicas() == [replica]  # the trip (still in Redis) is older than b's probe


def test_a_scratch_registry_tells_nobody(replica):
    scratch = NodeRegistry([replica], max_lag_seconds=30)  # the guard rail's: no trips
    b = worker(replica)
    scratch.mark_down(replica, "guard rail: simulated failure")
    assert b.may_connect(replica) is True


def test_with_redis_down_trips_stay_in_the_worker(replica, settings):
    settings.CACHES = {**settings.CACHES, "worker_a": dead_redis_cache(), "worker_b": dead_redis_cache()}
    a, b = worker(replica, "worker_a"), worker(replica, "worker_b")
    a.mark_down(replica, "connection refused")  # no error, though Redis is down
    assert a.may_connect(replica) is False
    assert b.may_connect(replica) is True


def test_a_process_without_a_monitor_ignores_the_fleets_trips(replica):
    """A management command: it cannot probe the node back, so a reported trip would keep it down for good."""
    a = worker(replica)
    command = NodeRegistry([replica], max_lag_seconds=30, trips=SharedNodeTrips(), trip_sync_seconds=0.0)
    a.mark_down(replica, "connection refused")
    assert command.may_connect(replica) is True
