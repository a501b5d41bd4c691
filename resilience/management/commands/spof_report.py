"""``spof_report``: the seed's SPOF scorecard for this deployment, live.

It looks once at every dependency as a worker's monitors would — one probe of each database node, a read of
the signing-key ring, one Redis round trip, the breakers' shared state, the workers' published snapshots —
then prints the eight areas and "Current SPOF Score: N/8 Areas at Risk". Exit 1 when a critical area
(database, authentication, configuration) is a single point of failure, so a deploy can be gated on it.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from resilience.auth.ring import ring_cache
from resilience.controls.services import controls_load
from resilience.db.monitor import NodeMonitor
from resilience.db.nodes import registry
from resilience.health.base import AreaStatus
from resilience.health.matrix import AREA_CHECKS, Matrix, matrix_now
from resilience.health.scorecard import TARGET_SCORE, critical_spofs, scorecard_rows
from resilience.observability.health import TelemetryHealth, telemetry_status
from resilience.serving.health import ServingHealth, serving_status

ICONS = {"pass": "✅", "warn": "⚠️ ", "fail": "❌"}


class _FleetServingHealth(ServingHealth):
    """This command serves nothing: count only the workers that do."""

    def assess(self) -> AreaStatus:
        return serving_status(count_self=False)


class _ConfiguredTelemetryHealth(TelemetryHealth):
    """This command exports no traces: the endpoints as configured (each worker's /health shows its exporters)."""

    def assess(self) -> AreaStatus:
        return telemetry_status(self, exporters=False)


FLEET_CHECKS = {ServingHealth: _FleetServingHealth, TelemetryHealth: _ConfiguredTelemetryHealth}


class Command(BaseCommand):
    help = "The SPOF scorecard: each area's state now. Exit 1 when a critical area is a single point of failure."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable: /health's body plus the scorecard")

    def handle(self, *args: Any, **options: Any) -> None:
        self._look_once()
        matrix = matrix_now(checks=[FLEET_CHECKS.get(check, check) for check in AREA_CHECKS])
        critical = critical_spofs(matrix)
        if options["json"]:
            body = {**matrix.health_body(), "scorecard": scorecard_rows(matrix), "critical_spofs": critical}
            self.stdout.write(json.dumps(body, indent=2))
        else:
            self._print(matrix)
        if critical:
            raise CommandError(
                f"critical single point(s) of failure: {', '.join(critical)}. "
                + " ".join(matrix.areas[area].risk for area in critical),
                returncode=1,
            )

    @staticmethod
    def _look_once() -> None:
        monitor = NodeMonitor(registry())
        try:
            monitor.probe_all()
        finally:
            monitor.close()
        try:
            controls_load()
        except DatabaseError:
            pass  # the database area reports why; the switches stay unknown here
        ring_cache.refresh(wait=True)  # from a replica when the primary is down
        caches["default"].get("bulwark:spof_report")  # one Redis round trip: trips the circuit if Redis is down

    def _print(self, matrix: Matrix) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING("SPOF risk scorecard"))
        self.stdout.write(f"{'Risk level':<10} | {'Components':<64} | {'Current':<11} | Target")
        self.stdout.write("-" * 106)
        for row in scorecard_rows(matrix):
            icon = "✅" if row["on_target"] and not row["at_risk"] else "⚠️ " if row["on_target"] else "❌"
            components = ", ".join(row["components"])
            self.stdout.write(f"{row['level']:<10} | {components:<64} | {row['current']:<11} | {row['target']} {icon}")
        self.stdout.write("")
        for status in matrix.areas.values():
            risk = ""
            if status.at_risk:
                risk = " — AT RISK" + (f": {status.risk}" if status.risk != status.detail else "")
            self.stdout.write(f"{ICONS[status.status]} {status.title}: {status.detail}{risk}")
            for component in status.components:
                if component.status != "pass" and component.output:
                    self.stdout.write(f"     {component.component_id}: {component.output}")
        score = len(matrix.at_risk)
        style = self.style.SUCCESS if score <= TARGET_SCORE else self.style.WARNING
        self.stdout.write("")
        self.stdout.write(style(f"Current SPOF Score: {score}/{len(matrix.areas)} Areas at Risk"))
        self.stdout.write(f"Target SPOF Score: {TARGET_SCORE}/{len(matrix.areas)} Areas at Risk")
