"""The logging and telemetry areas' health: what the log queue and its sinks and the trace exporters report.

Logging (:func:`resilience.observability.logs.log_health`): fail when no sink can be written or the listener is
down, warn when a sink is unwritable, records were dropped lately or the queue is nearly full. Telemetry
(:func:`resilience.observability.tracing.tracing_health`): each trace endpoint's exporter up or down and the spans
it dropped; at risk with fewer than two endpoints configured or up. Nothing here blocks: both read counters.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from django.conf import settings

from resilience.health.base import AreaCheck, AreaStatus, Component


def logging_status(check: AreaCheck) -> AreaStatus:
    """Logging (resilience/observability/logs.py): each sink writable (fail when none is, warn when one is not),
    the queue's depth (warn at 80% full), records dropped (warn for a drop in the last 5 minutes) and the
    listener thread (fail when it is not running: records wait, then are dropped)."""
    from resilience.observability.logs import log_health

    root = logging.getLogger()
    health = log_health()
    components = [Component("logging", "level", "root", "pass", logging.getLevelName(root.getEffectiveLevel()))]
    if not health["configured"]:
        components.append(
            Component("logging", "queue", "root", "warn", output="Bulwark's log queue is not configured (LOGGING)")
        )
        return check.status_from_config(components)
    sinks = health["sinks"]
    writable = [name for name, sink in sinks.items() if sink["writable"]]
    for name, sink in sinks.items():
        components.append(
            Component(
                "logging",
                "writable",
                name,
                "pass" if sink["writable"] else "warn" if writable else "fail",
                int(sink["writable"]),
                output="" if sink["writable"] else f"{sink['target']}: {sink['last_error'] or 'not writable'}",
            )
        )
    depth, capacity = health["queue_depth"], health["queue_capacity"]
    full = capacity > 0 and depth >= 0.8 * capacity
    running = health["listener_running"]
    components += [
        Component(
            "logging",
            "queue_depth",
            "queue",
            "warn" if full else "pass",
            depth,
            "records",
            output=f"the log queue is {depth}/{capacity} full" if full else "",
        ),
        Component(
            "logging",
            "dropped",
            "queue",
            "warn" if health["dropping"] else "pass",
            health["dropped"],
            "records",
            output="records dropped recently: the queue was full (a slow or hung sink)" if health["dropping"] else "",
        ),
        Component(
            "logging",
            "listener",
            "queue",
            "pass" if running else "fail",
            output="" if running else "the log listener thread is not running: records wait, then are dropped",
        ),
    ]
    return check.status_from_config(components)


def telemetry_status(check: AreaCheck, *, exporters: bool = True) -> AreaStatus:
    """Traces: per endpoint, its exporter (fail when every one is down, warn when some are) and the spans it
    dropped (warn for a drop in the last minute); at risk with fewer than two endpoints, or fewer than two up.
    ``exporters=False``: the configuration only (a command that exports nothing itself: ``spof_report``)."""
    from resilience.observability.tracing import DROP_WARN_WINDOW, tracing_health

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
    if not exporters:
        return check.status_from_config(components)
    traces = tracing_health()
    if endpoints and not traces["running"]:
        components.append(
            Component(
                "otlp",
                "exporter",
                "traces",
                "warn",
                output="tracing is not started in this process (gunicorn workers start it; runserver does not)",
            )
        )
    exporters = traces["endpoints"]
    down = [e for e in exporters if e["up"] is False]
    for exporter in exporters:
        endpoint, dropped_at = exporter["endpoint"], exporter["last_drop_at"]
        recent_drop = dropped_at is not None and time.time() - dropped_at < DROP_WARN_WINDOW
        components += [
            Component(
                "otlp",
                "exporter",
                endpoint,
                ("fail" if len(down) == len(exporters) else "warn") if exporter["up"] is False else "pass",
                {True: 1, False: 0, None: None}[exporter["up"]],
                output=f"down: {exporter['last_error']}" if exporter["up"] is False else "",
            ),
            Component(
                "otlp",
                "dropped",
                endpoint,
                "warn" if recent_drop else "pass",
                exporter["dropped"],
                "spans",
                output=f"spans dropped in the last {DROP_WARN_WINDOW:g}s" if recent_drop else "",
            ),
        ]
    status = check.status_from_config(components)
    if exporters and len(exporters) - len(down) < 2 and not status.at_risk:
        status.at_risk, status.risk = True, f"{len(exporters) - len(down)} trace exporter(s) up"
    return status


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
