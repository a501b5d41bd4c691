"""The serving area's health: how many worker processes serve right now, seen through the snapshots every
worker publishes each second (:mod:`resilience.health.workers`). With Redis down a worker sees only itself, so
the count is unknown (``warn``). One serving process is a single point of failure: when it dies or stalls,
nothing answers.
"""

from __future__ import annotations

import dataclasses

from django.conf import settings

from resilience.health.base import AreaCheck, AreaStatus, Component
from resilience.health.workers import worker_id, workers_live


def serving_status(*, count_self: bool = True) -> AreaStatus:
    """``count_self=False`` for a process that does not serve (a management command looking at the fleet)."""
    configured = settings.BULWARK_CONFIG.web_concurrency
    fleet = workers_live()
    me = worker_id()
    workers = [w for w in fleet.workers if count_self or w["id"] != me]
    hosts = sorted({w["host"] for w in workers})
    components = [Component("gunicorn", "workers", "configured", "pass", configured)]
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
    at_risk = live < 2
    return AreaStatus("serving", detail, components, at_risk=at_risk, risk=output if at_risk else "")


@dataclasses.dataclass
class ServingHealth(AreaCheck):
    area = "serving"

    def assess(self) -> AreaStatus:
        return serving_status()
