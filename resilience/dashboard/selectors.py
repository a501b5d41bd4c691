"""What the dashboard shows, read from the state the monitors already hold: nothing here writes.

The health matrix and this worker's registry are memory; the other workers come from their published snapshots
(Redis); events and the audit come from the database through the router (a replica while the primary is down;
with no node answering, this worker's buffered events only).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from resilience.auth.health import ring_summary
from resilience.auth.ring import ring_cache
from resilience.breakers.controls import PREFIX as BREAKER_PREFIX
from resilience.cache import cache_state
from resilience.config.serving import format_size
from resilience.controls.admin import control_choices
from resilience.controls.state import switches
from resilience.db.nodes import registry
from resilience.events.selectors import events_recent
from resilience.health.matrix import matrix_now
from resilience.health.scorecard import TARGET_SCORE, scorecard_rows
from resilience.health.workers import worker_id, workers_live
from resilience.serving.bulkheads import worker_bulkheads
from resilience.serving.classes import CLASS_DESCRIPTIONS, TRAFFIC_CLASSES

EVENTS_SHOWN = 30


def _worker_rows(fleet_workers: list[dict[str, Any]], me: str, now: float) -> list[dict[str, Any]]:
    rows = []
    for worker in fleet_workers:
        rows.append(
            {
                "id": worker["id"],
                "this": worker["id"] == me,
                "age": round(max(0.0, now - worker["published_at"]), 1),
                "uptime": round(now - worker["started_at"]),
                "monitor": worker.get("monitor", False),
                "nodes": sorted(worker["nodes"].values(), key=lambda node: node["alias"]),
                "breakers": sorted(worker["breakers"].values(), key=lambda breaker: breaker["name"]),
                "store": worker["cache"].get("backend", "?"),
                "switches_on": sorted(key for key, on in worker.get("controls", {}).items() if on),
            }
        )
    return rows


def _traffic_rows(fleet_workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each traffic class over the live workers: its per-worker limit, what is in flight and what was shed."""
    snapshots = [worker["serving"] for worker in fleet_workers if "serving" in worker]
    if not snapshots:
        snapshots = [worker_bulkheads().snapshot()]
    serving = settings.BULWARK_CONFIG.serving
    rows = []
    for name in TRAFFIC_CLASSES:
        states = [snap["classes"][name] for snap in snapshots]
        rows.append(
            {
                "name": name,
                "description": CLASS_DESCRIPTIONS[name],
                "limit": states[0]["limit"],
                "in_flight": sum(state["in_flight"] for state in states),
                "capacity": sum(state["limit"] for state in states),
                "peak": max(state["peak"] for state in states),
                "admitted": sum(state["admitted"] for state in states),
                "shed": sum(state["shed"] for state in states),
                "timeouts": sum(state["timeouts"] for state in states),
                "shed_recently": any(state["shed_recently"] for state in states),
                "budget": serving.budgets[name],
                "max_body": format_size(serving.max_bodies[name]),
            }
        )
    return rows


def dashboard_state() -> dict[str, Any]:
    """Everything the dashboard renders, JSON-serialisable (``/admin/resilience/state.json`` serves it)."""
    now = time.time()
    matrix = matrix_now()
    fleet = workers_live()
    me = worker_id()
    events = events_recent(limit=EVENTS_SHOWN)
    ring, ring_age = ring_cache.peek()
    on = switches()
    return {
        "generated_at": now,
        "worker": me,
        "status": matrix.status,
        "score": {"at_risk": len(matrix.at_risk), "total": len(matrix.areas), "target": TARGET_SCORE},
        "scorecard": scorecard_rows(matrix),
        "areas": [
            {"area": area, "title": status.title, "critical": status.critical, **status.as_dict()}
            for area, status in matrix.areas.items()
        ],
        "fleet": {"shared": fleet.shared, "note": fleet.note, "workers": _worker_rows(fleet.workers, me, now)},
        "traffic": _traffic_rows(fleet.workers),
        "bulkheads_off": sum(1 for worker in fleet.workers if not worker.get("serving", {}).get("enabled", True)),
        "threads": settings.BULWARK_CONFIG.serving.threads,
        "pool": settings.BULWARK_CONFIG.serving.pool,
        "nodes": sorted(registry().snapshot().values(), key=lambda node: node["alias"]),
        "primary_available": registry().primary_available(),
        "store": cache_state(),
        "keys": ring_summary(ring, datetime.now(UTC)) if ring is not None else [],
        "ring_age": round(ring_age, 1) if ring is not None else None,
        "switches": [
            {"key": key, "label": label, "enabled": on.get(key, False)}
            for key, label in control_choices()
            if not key.startswith(BREAKER_PREFIX)  # forced breakers show in the breakers' own rows
        ],
        "breaker_names": sorted(settings.BULWARK_BREAKERS),
        "events": events.events,
        "events_stored_readable": events.stored_readable,
        "events_dropped": events.dropped,
    }
