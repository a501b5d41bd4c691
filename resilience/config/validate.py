"""``manage.py validate_env``: the seed's "SPOF Environment Variable Analysis", for Bulwark.

Runs without Django (``manage.py`` calls :func:`main` before Django's set-up), so it works exactly
when the settings cannot load. Reads configuration only; opens no connection.
Exit codes: 0 valid and no critical SPOF, 1 valid but a critical area has no redundancy, 2 invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from resilience.config.loader import ConfigError, load_config
from resilience.config.schema import AREA_TITLES
from resilience.config.spof import AreaReport, assess_config, assess_invalid

EXIT_VALID, EXIT_CRITICAL_SPOF, EXIT_INVALID = 0, 1, 2
_ICONS = {"ok": "✅", "warning": "⚠️ ", "error": "❌"}


def analyse(environ: Mapping[str, str] | None = None) -> tuple[int, dict[str, AreaReport]]:
    """The exit code and each area's report."""
    try:
        config = load_config(environ)  # None: the process environment and .env, with the file's own problems
    except ConfigError as exc:
        return EXIT_INVALID, assess_invalid(exc.findings, exc.provided)
    reports = assess_config(config)
    critical_at_risk = any(report.critical and not report.healthy for report in reports.values())
    return (EXIT_CRITICAL_SPOF if critical_at_risk else EXIT_VALID), reports


def _summary(code: int, reports: dict[str, AreaReport]) -> str:
    at_risk = [area for area, report in reports.items() if not report.healthy]
    critical = [area for area in at_risk if reports[area].critical]
    if code == EXIT_INVALID:
        errors = sum(1 for report in reports.values() for line in report.lines if line.level == "error")
        return f"❌ Invalid configuration: {errors} problem(s). Bulwark will not start until they are fixed."
    if code == EXIT_CRITICAL_SPOF:
        return (
            f"⚠️  Valid, but critical area(s) without redundancy: {', '.join(critical)}. "
            f"{len(at_risk)} of {len(reports)} areas at risk."
        )
    return f"✅ Valid; no critical single point of failure. {len(at_risk)} of {len(reports)} areas at risk."


def render_text(code: int, reports: dict[str, AreaReport], out: TextIO) -> None:
    out.write("🔍 SPOF Environment Variable Analysis\n====================================\n")
    for area, report in reports.items():
        kind = "CRITICAL" if report.critical else "medium"
        state = "no SPOF" if report.healthy else "AT RISK"
        out.write(f"\n📊 {AREA_TITLES[area]} ({kind}, {state}){': ' + report.detail if report.detail else ''}\n")
        for line in report.lines:
            out.write(f"  {_ICONS[line.level]} {line.variable}: {line.message}\n")
    out.write(f"\n{_summary(code, reports)}\n")


def as_json(code: int, reports: dict[str, AreaReport]) -> dict[str, Any]:
    return {
        "valid": code != EXIT_INVALID,
        "exit_code": code,
        "summary": _summary(code, reports),
        "score": {"at_risk": sum(not r.healthy for r in reports.values()), "total": len(reports)},
        "critical": [area for area, r in reports.items() if r.critical and not r.healthy],
        "areas": {
            area: {
                "critical": report.critical,
                "healthy": report.healthy,
                "detail": report.detail,
                "lines": [{"level": ln.level, "variable": ln.variable, "message": ln.message} for ln in report.lines],
            }
            for area, report in reports.items()
        },
    }


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="manage.py validate_env", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output, areas as in /health")
    args = parser.parse_args(argv)
    code, reports = analyse()
    if args.json:
        out.write(json.dumps(as_json(code, reports), indent=2, ensure_ascii=False) + "\n")
    else:
        render_text(code, reports, out)
    return code
