"""The database area's health: each node as this process's monitor last saw it (role, reachable, lag, breaker).

No connection is opened: the monitor probes every node ten times a second (:mod:`resilience.db.monitor`), and a
probe that stops answering makes the node ``timeout`` here within a second. The area works (``warn``) while any
node serves reads — a primary down with a replica serving is degraded, not down — and fails only when no node
answers at all. It is a single point of failure whenever fewer than two nodes are usable.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from resilience.controls.state import db_controls
from resilience.db.nodes import PRIMARY, registry
from resilience.health.base import AreaCheck, AreaStatus, Component, Status

PROBE_STALE_SECONDS = 1.0  # the monitor probes every 0.1 s: a node unheard of for this long is hanging


def _node_component(alias: str, node: dict[str, Any], *, probing: bool, now: float) -> Component:
    role = node["role"]
    quiet_for = now - node["probed_at"] if node["probed_at"] is not None else None
    if not node["reachable"]:
        error = node["last_error"] or "unreachable"
        output = "timeout" if error.startswith("timeout") else error
        return Component("postgresql", "reachable", alias, "fail", False, output=output, component_type="datastore")
    if probing and quiet_for is not None and quiet_for > PROBE_STALE_SECONDS:
        return Component("postgresql", "reachable", alias, "fail", False, output="timeout", component_type="datastore")
    if probing and node["probed_at"] is None:
        output = "not probed yet"
        return Component("postgresql", "reachable", alias, "warn", True, output=output, component_type="datastore")
    output = "" if role == node["configured_role"] else f"configured as {node['configured_role']}, now {role}"
    return Component("postgresql", "reachable", alias, "pass", True, output=output, component_type="datastore")


def _lag_component(alias: str, node: dict[str, Any], max_lag: float, drained: frozenset[str]) -> Component:
    lag = node["lag_seconds"]
    status: Status = "pass"
    output = ""
    if alias in drained:
        status, output = "warn", "drained by an operator: no new reads"
    elif node["slow"]:
        status, output = "warn", "answers much slower than the primary: out of the read rotation"
    elif lag is not None and lag > max_lag:
        status, output = "warn", f"{lag:.1f}s behind (limit {max_lag:g}s): reads go to the primary"
    value = round(lag, 3) if lag is not None else None
    return Component("postgresql", "lag", alias, status, value, "s", output, component_type="datastore")


def database_status() -> AreaStatus:
    nodes = registry()
    snapshot = nodes.snapshot()
    controls = db_controls()
    now = time.time()
    components: list[Component] = []
    usable: list[str] = []
    for alias, node in snapshot.items():
        component = _node_component(alias, node, probing=nodes.probing, now=now)
        components.append(component)
        if component.status != "fail":
            usable.append(alias)
            if alias != PRIMARY:
                components.append(_lag_component(alias, node, nodes.max_lag_seconds, controls.drained))
    if controls.read_only:
        components.append(
            Component("postgresql", "writes", PRIMARY, "warn", "read-only", output="read-only mode set by an operator")
        )
    primary_up = PRIMARY in usable
    replicas_up = [alias for alias in usable if alias != PRIMARY]
    verdict: Status
    if not usable:
        verdict, detail = "fail", "no database node answers: nothing can be read or written"
    elif not primary_up:
        verdict, detail = "warn", f"primary down: reads served by {', '.join(replicas_up)}, writes refused (503)"
    elif not nodes.replica_aliases:
        verdict, detail = "pass", "primary only (no replica configured)"
    elif not replicas_up:
        verdict, detail = "warn", "every replica down: reads go to the primary"
    else:
        verdict = "warn" if any(c.status != "pass" for c in components) else "pass"
        detail = f"primary up, {len(replicas_up)} of {len(nodes.replica_aliases)} replica(s) serving reads"
    at_risk = len(usable) < 2
    risk = ""
    if at_risk:
        risk = (
            "single PostgreSQL host: no replica to read from when the primary fails"
            if not nodes.replica_aliases
            else "one node left: its failure stops the service"
            if usable
            else "no node left"
        )
    return AreaStatus("database", detail, components, at_risk=at_risk, risk=risk, verdict=verdict)


@dataclasses.dataclass
class DatabaseHealth(AreaCheck):
    area = "database"

    def assess(self) -> AreaStatus:
        return database_status()
