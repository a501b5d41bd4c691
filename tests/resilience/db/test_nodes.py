"""The per-process node registry: breakers, lag eviction and rotation among healthy replicas."""

from __future__ import annotations

from resilience.db.nodes import PRIMARY, NodeRegistry


def registry(*replicas: str, naive: bool = False) -> NodeRegistry:
    return NodeRegistry(list(replicas), max_lag_seconds=5, naive=naive)


def test_reads_rotate_among_healthy_replicas() -> None:
    nodes = registry("r1", "r2", "r3")
    firsts = [nodes.readable_replicas()[0] for _ in range(6)]
    assert firsts == ["r1", "r2", "r3", "r1", "r2", "r3"]


def test_down_lagging_and_excluded_replicas_leave_rotation() -> None:
    nodes = registry("r1", "r2", "r3")
    nodes.mark_down("r1", "refused")
    nodes.record_probe("r2", in_recovery=True, lag_seconds=9, lag_bytes=100, replay_lsn=1)
    assert nodes.readable_replicas() == ["r3"]
    assert nodes.readable_replicas(frozenset({"r3"})) == []
    assert nodes.reachable_replicas() == ["r2", "r3"]  # lagging still answers: the last resort


def test_a_breaker_opens_on_the_first_failure_and_closes_on_a_probe() -> None:
    nodes = registry("r1")
    assert nodes.may_connect("r1") and nodes.state("r1").breaker == "closed"
    nodes.mark_down("r1", "connection refused")
    assert not nodes.may_connect("r1") and nodes.state("r1").breaker == "open"
    assert nodes.state("r1").last_error == "connection refused"
    nodes.record_probe("r1", in_recovery=True, lag_seconds=0, lag_bytes=0, replay_lsn=10)
    assert nodes.may_connect("r1") and nodes.state("r1").last_error == ""


def test_primary_availability_and_snapshot_for_the_health_layer() -> None:
    nodes = registry("r1")
    nodes.mark_down(PRIMARY, "killed")
    assert not nodes.primary_available()
    snapshot = nodes.snapshot()
    assert snapshot[PRIMARY]["reachable"] is False and snapshot[PRIMARY]["breaker"] == "open"
    assert set(snapshot["r1"]) >= {"role", "reachable", "lag_seconds", "lag_bytes", "breaker"}


def test_naive_mode_has_no_breaker() -> None:
    nodes = registry("r1", naive=True)
    nodes.mark_down("r1", "refused")
    assert nodes.may_connect("r1") and nodes.readable_replicas() == ["r1"]
