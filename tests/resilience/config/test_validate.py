"""validate_env in-process: areas, exit codes, no secret values (the no-connection proof is a system test)."""

from __future__ import annotations

import io

import pytest

from resilience.config.validate import EXIT_CRITICAL_SPOF, EXIT_INVALID, EXIT_VALID, analyse, as_json, render_text
from tests.helpers import HEALTH_AREAS

VALID = {
    "SECRET_KEY": "k" * 45 + "abcde",
    "JWT_SECRET": "j" * 32,
    "DJANGO_ENV": "development",
    "DATABASE_URL": "postgres://u:secretpw@127.0.0.1:5432/shop",
}
REDUNDANT = {
    **VALID,
    "DATABASE_REPLICA_URLS": "postgres://u:secretpw@127.0.0.2:5432/shop",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTEL_EXPORTER_OTLP_ENDPOINTS": "http://a:4318,http://b:4318",
}


@pytest.mark.parametrize(
    ("environ", "code"),
    [
        ({}, EXIT_INVALID),
        (VALID, EXIT_CRITICAL_SPOF),
        (REDUNDANT, EXIT_VALID),
        ({**VALID, "DATABASE_URL": "postgres://u:p@h1:5432,h2:5432/shop?target_session_attrs=read-write"}, EXIT_VALID),
    ],
)
def test_exit_codes(environ, code) -> None:
    assert analyse(environ)[0] == code


def test_each_area_is_reported_and_at_risk_areas_are_named() -> None:
    code, reports = analyse(VALID)
    assert list(reports) == HEALTH_AREAS
    assert {area for area, report in reports.items() if not report.healthy} == {"database", "telemetry", "rateLimit"}
    report = as_json(code, reports)
    assert report["critical"] == ["database"] and report["score"] == {"at_risk": 3, "total": 8}


def test_text_report_names_variables_not_secret_values() -> None:
    out = io.StringIO()
    render_text(*analyse({**VALID, "JWT_SECRET": "short-jwt-secret"}), out)
    text = out.getvalue()
    assert "❌ JWT_SECRET" in text and "short-jwt-secret" not in text and "secretpw" not in text
    assert "✅ DATABASE_URL: set" in text
    assert text.rstrip().splitlines()[-1].startswith("❌ Invalid configuration: 1 problem(s)")
