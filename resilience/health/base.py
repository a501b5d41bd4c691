"""The shape every area's health check shares, built on django-health-check's ``HealthCheck``.

One check per SPOF area (the seed's eight); each lives beside the code it watches (``resilience/db/health.py``,
``resilience/auth/health.py``, ...) and reads the state the monitors already keep: no check opens a connection
to a dependency a monitor already watches, so a hung dependency cannot hang a probe. A check's ``assess()``
returns an :class:`AreaStatus` — components with a pass / warn / fail status (draft-inadarei-api-health-check),
whether the area is a single point of failure right now, and one sentence for operators — and ``run()`` turns it
into django-health-check's exceptions so its own page (``/health/checks/``) shows the same verdicts.

django-health-check keeps no structured result: ``run()`` stores the assessment on the check instance, which
the view creates afresh for every request (``HealthCheckView.get_checks``).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal

from django.conf import settings
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from resilience.config.schema import AREA_TITLES, CRITICAL_AREAS
from resilience.config.spof import AreaReport, assess_config

Status = Literal["pass", "warn", "fail"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}

# A check reads memory only and answers in microseconds; this budget is for a machine under load. The library
# waits one second more than a check's timeout, so a probe answers within CHECK_TIMEOUT + 1 s even when a check
# hangs (reported as failed with output "timeout").
CHECK_TIMEOUT = datetime.timedelta(seconds=0.7)


def worst(statuses: list[str]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default="pass")  # type: ignore[return-value]


@dataclass(frozen=True)
class Component:
    """One measured part of an area, as draft-inadarei-api-health-check's ``checks`` entries."""

    name: str  # e.g. "postgresql", "jwt", "redis"; with ``measurement`` it makes the ``checks`` key
    measurement: str  # e.g. "reachable", "lag", "state"
    component_id: str  # which one: "default", "replica_1", "payment_gateway"
    status: Status
    observed_value: Any = None
    observed_unit: str = ""
    output: str = ""  # why it is not passing, for a person
    component_type: str = "component"  # component | datastore | system

    def as_health_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "componentId": self.component_id,
            "componentType": self.component_type,
            "status": self.status,
        }
        if self.observed_value is not None:
            entry["observedValue"] = self.observed_value
        if self.observed_unit:
            entry["observedUnit"] = self.observed_unit
        if self.output:
            entry["output"] = self.output
        return entry


@dataclass
class AreaStatus:
    area: str
    detail: str
    components: list[Component] = field(default_factory=list)
    at_risk: bool = False  # a single point of failure right now (by configuration or by what has failed)
    risk: str = ""  # why, when at risk
    timed_out: bool = False
    verdict: Status | None = None  # the area's own verdict where it is not its worst component's
    checked_at: float = field(default_factory=time.time)

    @property
    def status(self) -> Status:
        """The area's state. A part may fail while the area still works (a primary down, reads served: warn)."""
        return self.verdict or worst([component.status for component in self.components])

    @property
    def healthy(self) -> bool:
        return self.status == "pass"

    @property
    def critical(self) -> bool:
        return self.area in CRITICAL_AREAS

    @property
    def title(self) -> str:
        return AREA_TITLES[self.area]

    def as_dict(self) -> dict[str, Any]:
        """The area as ``/health`` shows it: the seed's ``healthy``/``critical``/``detail`` and what explains them."""
        return {
            "healthy": self.healthy,
            "critical": self.critical,
            "detail": self.detail,
            "status": self.status,
            "at_risk": self.at_risk,
            "risk": self.risk,
            "components": [{"component": f"{c.name}:{c.measurement}", **c.as_health_json()} for c in self.components],
        }


@cache
def config_reports() -> dict[str, AreaReport]:
    """What the configuration alone leaves as a single point of failure (it does not change while running)."""
    return assess_config(settings.BULWARK_CONFIG)


def config_reports_clear() -> None:
    config_reports.cache_clear()


@dataclasses.dataclass
class AreaCheck(HealthCheck):
    """Base of the eight area checks. Subclasses set ``area`` and implement :meth:`assess`."""

    area: ClassVar[str]
    timeout: ClassVar[datetime.timedelta] = CHECK_TIMEOUT

    def __post_init__(self) -> None:
        self.result: AreaStatus | None = None
        self.finished = False

    def assess(self) -> AreaStatus:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.result = result = self.assess()
        finally:
            self.finished = True
        if result.status == "fail":
            raise ServiceUnavailable(result.detail)
        if result.status == "warn":
            raise ServiceWarning(result.detail)

    def outcome(self, error: BaseException | None) -> AreaStatus:
        """The assessment, or a failed one when the check did not finish: it hung past its time, or crashed."""
        if self.result is not None:
            return self.result
        timed_out = not self.finished  # hung, or never scheduled in time; a crash finishes (see run)
        output = "timeout" if timed_out else f"the check failed: {error}"
        return AreaStatus(
            area=self.area,
            detail=f"the {self.area} check did not answer within {self.timeout.total_seconds():g}s"
            if timed_out
            else f"the {self.area} check failed (see the log)",
            components=[Component(self.area, "responseTime", self.area, "fail", output=output)],
            at_risk=True,
            risk="its state is unknown",
            timed_out=timed_out,
        )

    def config_report(self) -> AreaReport:
        return config_reports()[self.area]

    def status_from_config(self, components: list[Component], *, detail: str = "") -> AreaStatus:
        """An area whose risk is what the configuration leaves (logging, telemetry, configuration)."""
        report = self.config_report()
        return AreaStatus(
            area=self.area,
            detail=detail or report.detail,
            components=components,
            at_risk=not report.healthy,
            risk="" if report.healthy else report.detail,
        )
