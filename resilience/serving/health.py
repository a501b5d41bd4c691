"""The serving area's health: how many worker processes serve right now, seen through the snapshots every
worker publishes each second (:mod:`resilience.health.workers`), and whether the traffic classes are isolated.

With Redis down a worker sees only itself, so the count is unknown (``warn``). One serving process is a single
point of failure: when it dies or stalls, nothing answers. Classes are isolated when every worker runs its
bulkheads (one class's flood cannot take the threads of the others, nor the one kept for ops); a class that shed
requests in the last minute is ``warn`` (overloaded, still isolated). Neither is a single point of failure by
itself: the area is at risk by the worker count only.
"""

from __future__ import annotations

import dataclasses

from django.conf import settings

from resilience.health.base import AreaCheck, AreaStatus, Component
from resilience.health.workers import worker_id, workers_live
from resilience.serving.bulkheads import worker_bulkheads
from resilience.serving.classes import OPS, TRAFFIC_CLASSES


def serving_status(*, count_self: bool = True) -> AreaStatus:
    """``count_self=False`` for a process that does not serve (a management command looking at the fleet)."""
    configured = settings.BULWARK_CONFIG.web_concurrency
    fleet = workers_live()
    me = worker_id()
    workers = [w for w in fleet.workers if count_self or w["id"] != me]
    hosts = sorted({w["host"] for w in workers})
    components = [Component("gunicorn", "workers", "configured", "pass", configured)]
    snapshots = [w["serving"] for w in workers if "serving" in w] if fleet.shared else []
    if count_self and not snapshots:
        snapshots = [worker_bulkheads().snapshot()]
    components += isolation_components(snapshots)
    if not fleet.shared:
        components.append(Component("gunicorn", "workers", "live", "warn", output=fleet.note))
        detail = f"{configured} worker(s) configured; live count unknown: {fleet.note}"
        at_risk = configured < 2
        risk = "one worker process configured" if at_risk else ""
        return AreaStatus("serving", detail, components, at_risk=at_risk, risk=risk)
    live = len(workers)
    status = "pass" if live >= 2 else "warn" if live == 1 else "fail"
    output = "" if live >= 2 else "one process serves: when it dies or stalls, nothing answers" if live else ""
    if not live:
        output = "no worker has published a snapshot in the last seconds"
    components.append(Component("gunicorn", "workers", "live", status, live, output=output))
    detail = f"{live} live worker(s) on {len(hosts)} host(s) ({configured} configured per host)"
    pool = settings.BULWARK_CONFIG.serving.pool
    if pool:
        detail += f"; this server is the {pool} pool (with ops)"
    at_risk = live < 2
    return AreaStatus("serving", detail, components, at_risk=at_risk, risk=output if at_risk else "")


def isolation_components(snapshots: list[dict]) -> list[Component]:
    """Whether every worker keeps its classes apart (bulkheads on), and which classes shed load lately."""
    if not snapshots:
        return [Component("bulkheads", "isolated", "classes", "warn", output="no worker snapshot to judge from")]
    off = sum(1 for snap in snapshots if not snap["enabled"])
    first = snapshots[0]
    limits = ", ".join(f"{name} {first['classes'][name]['limit']}" for name in TRAFFIC_CLASSES if name != OPS)
    value = f"{limits} of {first['threads']} threads; ops {first['classes'][OPS]['limit']}, one thread kept for it"
    if off:
        isolated = Component(
            "bulkheads",
            "isolated",
            "classes",
            "fail",
            f"{off} of {len(snapshots)} worker(s) without bulkheads",
            output="one class can take every thread of those workers: checkout, login and probes wait behind it",
        )
    else:
        isolated = Component("bulkheads", "isolated", "classes", "pass", value)
    shedding = sorted({name for snap in snapshots for name, state in snap["classes"].items() if state["shed_recently"]})
    components = [isolated]
    if shedding:
        components.append(
            Component(
                "bulkheads",
                "shedding",
                "classes",
                "warn",
                ", ".join(shedding),
                output=f"at their limit in the last minute (503 overloaded): {', '.join(shedding)}",
            )
        )
    return components


@dataclasses.dataclass
class ServingHealth(AreaCheck):
    area = "serving"

    def assess(self) -> AreaStatus:
        return serving_status()
