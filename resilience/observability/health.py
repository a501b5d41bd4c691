"""The logging and telemetry areas' health, as this version has them.

Logging: records go to standard output (collected by the process manager); nothing is written to a local disk,
so a full log disk cannot stop a request. Telemetry: Prometheus metrics are kept in each process and the
configured trace endpoints are listed; an area with a single sink is at risk.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from django.conf import settings

from resilience.health.base import AreaCheck, AreaStatus, Component


def logging_status(check: AreaCheck) -> AreaStatus:
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    broken = [h for h in streams if getattr(h.stream, "closed", False)]
    components = [
        Component(
            "logging",
            "handlers",
            "root",
            "fail" if broken or not root.handlers else "pass",
            len(root.handlers),
            output="a log stream is closed" if broken else "" if root.handlers else "no handler: records are lost",
        ),
        Component("logging", "level", "root", "pass", logging.getLevelName(root.getEffectiveLevel())),
    ]
    if sys.stdout.closed:
        components.append(Component("logging", "stdout", "stdout", "fail", output="standard output is closed"))
    return check.status_from_config(components)


def telemetry_status(check: AreaCheck) -> AreaStatus:
    endpoints = settings.BULWARK_CONFIG.otlp_endpoints
    components = [
        Component(
            "otlp",
            "endpoints",
            "traces",
            "pass" if endpoints else "warn",
            len(endpoints),
            output="" if endpoints else "no OTEL_EXPORTER_OTLP_ENDPOINTS: no traces leave the process",
        ),
    ]
    return check.status_from_config(components)


@dataclasses.dataclass
class LoggingHealth(AreaCheck):
    area = "logging"

    def assess(self) -> AreaStatus:
        return logging_status(self)


@dataclasses.dataclass
class TelemetryHealth(AreaCheck):
    area = "telemetry"

    def assess(self) -> AreaStatus:
        return telemetry_status(self)
