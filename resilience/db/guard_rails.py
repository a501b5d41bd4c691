"""Guard rail of the database fallback (registered in ResilienceConfig.ready): a scratch node registry shows
replica and primary loss are routed around; one read-only probe of every node reports the live state."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings

from resilience.db.monitor import NodeMonitor
from resilience.db.nodes import PRIMARY, NodeRegistry, registry
from resilience.guard_rails import Line, guard_rail_register, quiet


def register() -> None:
    guard_rail_register("Database: replica and primary fallback", check_database)


def check_database() -> Iterator[Line]:
    """Replica down -> reads go to the primary (scratch registry); then one read-only probe of every node."""
    replicas = [alias for alias in settings.DATABASES if alias != PRIMARY]
    if not replicas:
        yield ("warn", "no replica configured: reads have nowhere to go when the primary fails")
    else:
        with quiet("resilience.db"):  # the scratch registry's "node down" lines would read like a real outage
            yield from _scratch_database(replicas)
    monitor = NodeMonitor(registry())
    try:
        monitor.probe_all()
    finally:
        monitor.close()
    for alias, state in registry().snapshot().items():
        if state["reachable"]:
            lag = f", lag {state['lag_seconds']:.1f}s" if state["lag_seconds"] is not None else ""
            yield ("info", f"{alias} ({state['role']}) answers{lag}")
        else:
            yield ("warn", f"{alias} is down now: {state['last_error']} (the guard rail above is in effect)")


def _scratch_database(replicas: list[str]) -> Iterator[Line]:
    scratch = NodeRegistry(replicas, max_lag_seconds=30)
    for alias in replicas:
        scratch.mark_down(alias, "guard rail: simulated failure")
    rerouted = scratch.readable_replicas() == [] and scratch.primary_available()
    scratch.record_probe(replicas[0], in_recovery=True, lag_seconds=0.0, lag_bytes=0, replay_lsn=None)
    back = replicas[0] in scratch.readable_replicas()
    yield ("ok" if rerouted else "fail", "replicas down: reads go to the primary, no timeout paid")
    yield ("ok" if back else "fail", "a replica found back by a probe returns to read rotation")
    scratch.mark_down(PRIMARY, "guard rail: simulated failure")
    yield (
        "ok" if not scratch.primary_available() and scratch.reachable_replicas() else "fail",
        "primary down: reads continue on a replica, writes answer 503 read_only_mode",
    )
