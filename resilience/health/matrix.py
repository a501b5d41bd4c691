"""The eight area checks run together: one per SPOF area, each in its own thread, each bounded in time.

django-health-check runs sync checks in an executor and waits ``timeout + 1 s`` for each. Its default executor
is the event loop's shared pool, which the view waits for: a check that hangs holds the response. Here every run
gets its own pool, shut down without waiting (``wait=False, cancel_futures=True``): a hung check is reported as
failed with output ``timeout`` and its thread is left to finish on its own, so every probe answers in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from resilience.auth.health import AuthenticationHealth
from resilience.breakers.health import CircuitBreakersHealth
from resilience.config.health import ConfigurationHealth
from resilience.config.schema import AREAS
from resilience.db.health import DatabaseHealth
from resilience.health.base import AreaCheck, AreaStatus, Status
from resilience.observability.health import LoggingHealth, TelemetryHealth
from resilience.ratelimit.health import RateLimitHealth
from resilience.serving.health import ServingHealth

AREA_CHECKS: tuple[type[AreaCheck], ...] = (
    DatabaseHealth,
    AuthenticationHealth,
    ConfigurationHealth,
    LoggingHealth,
    TelemetryHealth,
    ServingHealth,
    RateLimitHealth,
    CircuitBreakersHealth,
)
assert tuple(check.area for check in AREA_CHECKS) == AREAS, "one check per SPOF area, in the seed's order"

# Areas whose failure means this instance cannot serve at all: no database node answers. Every other failure
# degrades (sign-in without the ring answers 503 on its own; an open breaker falls back).
READINESS_AREAS = frozenset({"database"})


@contextlib.contextmanager
def per_request_executor() -> Iterator[Executor]:
    pool = ThreadPoolExecutor(max_workers=len(AREA_CHECKS), thread_name_prefix="health-check")
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung check must not hold the response


@dataclass
class Matrix:
    areas: dict[str, AreaStatus]
    checked_at: float = field(default_factory=time.time)
    took_ms: float = 0.0

    @property
    def at_risk(self) -> list[str]:
        return [area for area, status in self.areas.items() if status.at_risk]

    @property
    def critical(self) -> list[str]:
        """The seed's ``spofs.critical``: critical areas that are not healthy."""
        return [area for area, status in self.areas.items() if status.critical and not status.healthy]

    @property
    def status(self) -> Status:
        """Readiness: fail when an area this instance cannot serve without fails, warn when anything degrades."""
        if any(self.areas[area].status == "fail" for area in READINESS_AREAS):
            return "fail"
        return "pass" if all(status.status == "pass" for status in self.areas.values()) else "warn"

    def health_body(self) -> dict[str, Any]:
        """``GET /health``: the seed's body, with the readiness status and each area's components."""
        return {
            "success": not self.critical,
            "status": self.status,
            "score": {"at_risk": len(self.at_risk), "total": len(self.areas)},
            "spofs": {
                "critical": self.critical,
                "at_risk": self.at_risk,
                "status": {area: status.as_dict() for area, status in self.areas.items()},
            },
            "checked_at": self.checked_at,
        }

    def ready_body(self) -> dict[str, Any]:
        """``GET /health/ready``: draft-inadarei-api-health-check, ``checks`` keyed ``component:measurement``."""
        checks: dict[str, list[dict[str, Any]]] = {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked_at))
        for status in self.areas.values():
            for component in status.components:
                entry = {**component.as_health_json(), "time": now, "area": status.area}
                checks.setdefault(f"{component.name}:{component.measurement}", []).append(entry)
        body: dict[str, Any] = {
            "status": self.status,
            "description": "Bulwark: ready to serve when any database node answers",
            "checks": checks,
        }
        notes = [f"{s.area}: {s.detail}" for s in self.areas.values() if s.status != "pass"]
        if notes:
            body["output"] = "; ".join(notes)
        return body


async def matrix_gather(checks: list[AreaCheck], executor: Executor | None) -> Matrix:
    started = time.monotonic()
    results = await asyncio.gather(*(check.get_result(executor) for check in checks))
    areas = {result.check.area: result.check.outcome(result.error) for result in results}  # type: ignore[attr-defined]
    return Matrix(areas={area: areas[area] for area in AREAS}, took_ms=round((time.monotonic() - started) * 1000, 1))


def matrix_now(checks: Sequence[type[AreaCheck]] = AREA_CHECKS) -> Matrix:
    """Run every area check from synchronous code (a command, the dashboard)."""
    with per_request_executor() as executor:
        return asyncio.run(matrix_gather([check() for check in checks], executor))
