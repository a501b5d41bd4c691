"""The circuit-breaker area's health: each breaker's state as this process sees it (shared with the fleet
through Redis when it is up). An open breaker is degraded, not down: the call it guards has a fallback
(a payment waits as ``pending_payment``). Reading a snapshot costs at most one Redis read per breaker."""

from __future__ import annotations

import dataclasses

from resilience.breakers.registry import breakers_snapshot
from resilience.health.base import AreaCheck, AreaStatus, Component


def _component(name: str, snap: dict) -> Component:
    state, forced = snap["state"], snap["forced"]
    output = ""
    if forced != "automatic":
        output = f"forced {forced} by an operator"
    elif state == "open":
        output = f"open after {snap['consecutive_failures']} failure(s): {snap['last_failure'] or 'calls failed'}"
    elif state == "half_open":
        output = "trial call in progress"
    status = "pass" if state == "closed" and forced == "automatic" else "warn"
    return Component("breaker", "state", name, status, state, output=output)


def circuit_breakers_status(check: AreaCheck) -> AreaStatus:
    snapshots = breakers_snapshot()
    components = [_component(name, snap) for name, snap in snapshots.items()]
    opened = [c.component_id for c in components if c.observed_value != "closed"]
    if opened:
        detail = f"falling back for {', '.join(opened)}; the rest call through"
    else:
        detail = f"{len(components)} breaker(s) closed: external calls go through"
    return check.status_from_config(components, detail=detail)


@dataclasses.dataclass
class CircuitBreakersHealth(AreaCheck):
    area = "circuitBreakers"

    def assess(self) -> AreaStatus:
        return circuit_breakers_status(self)
