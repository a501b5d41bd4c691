"""Exercise every breaker and fallback against the running configuration, safely; print a ✅/❌ report.

The seed's ``test-guard-rails.js`` for Bulwark. Nothing here changes production state or charges anything:
see :mod:`resilience.guard_rails`. Exit 0 when every guard rail works, 1 (a CommandError) when one does not.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from resilience.controls.services import controls_load
from resilience.guard_rails import guard_rails

ICONS = {"ok": "✅", "fail": "❌", "warn": "⚠️ ", "info": "\u2139\ufe0f "}


class Command(BaseCommand):
    help = "Trip each circuit breaker and fallback in isolation (scratch copies, loopback sockets) and report."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("Bulwark guard rails\n")
        try:
            controls_load()  # the operators' switches, to report forced breakers
        except Exception as exc:  # noqa: BLE001 - a down database is reported by its own check below
            self.stdout.write(f"{ICONS['warn']} operator switches not readable: {exc}")
        failed = passed = warned = 0
        for title, check in guard_rails().items():
            self.stdout.write(self.style.MIGRATE_HEADING(title))
            try:
                lines = list(check())
            except Exception as exc:  # noqa: BLE001 - a check that crashes is a failed guard rail, reported
                lines = [("fail", f"the check itself failed: {type(exc).__name__}: {exc}")]
            for level, message in lines:
                self.stdout.write(f"  {ICONS[level]} {message}")
                failed += level == "fail"
                passed += level == "ok"
                warned += level == "warn"
        summary = f"{passed} passed, {failed} failed, {warned} warning(s)."
        if failed:
            raise CommandError(f"{summary} Some guard rails do not work: see the ❌ lines above.")
        self.stdout.write(self.style.SUCCESS(f"\n{summary} Every guard rail works."))
