"""``manage.py spof_report``: the seed's scorecard for this deployment, live, against the test stack's real
PostgreSQL primary + replica and real Redis. In process (``call_command``) for each state, and once as the real
command in a subprocess, whose exit code a deploy gate reads.

The command looks once at every dependency (one probe per node, the ring, one Redis round trip, the workers'
snapshots), so a node killed for real (``tests.helpers.dead``) is seen without a monitor thread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from resilience.db.nodes import PRIMARY, reset_registry
from resilience.health.base import config_reports_clear
from resilience.health.workers import _publish
from resilience.serving.bulkheads import Bulkheads
from tests.helpers import HEALTH_AREAS, dead, fresh_logging

REPLICA = "replica_1"
ROOT = Path(__file__).resolve().parents[3]
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.usefixtures("fresh_circuits"),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]

SCORE_LINE = re.compile(r"^Current SPOF Score: (\d+)/8 Areas at Risk$", re.MULTILINE)
ROWS = {
    "Critical": "Database, Authentication, Configuration",
    "Medium": "Logging, Telemetry, Serving",
    "Low": "Cache and rate limiting, External services and circuit breakers",
}
TRACE_ENDPOINTS = ["http://otel-a.invalid:4318", "http://otel-b.invalid:4318"]


@pytest.fixture(autouse=True)
def own_fleet(settings) -> Iterator[None]:
    """A Redis key prefix of the test's own: no other test's (or run's) published workers count here."""
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"spof-{uuid.uuid4().hex[:8]}"},
    }
    fresh_logging()
    config_reports_clear()
    reset_registry()
    yield
    config_reports_clear()
    reset_registry()  # every node usable again before the database is flushed


def configure(settings, **changes: Any) -> None:
    settings.BULWARK_CONFIG = dataclasses.replace(settings.BULWARK_CONFIG, **changes)
    config_reports_clear()


def peers(count: int) -> None:
    """``count`` serving workers that have just published their snapshot (the command serves nothing itself)."""
    serving = settings.BULWARK_CONFIG.serving
    bulkheads = Bulkheads(serving.limits, serving.threads).snapshot()  # as a worker publishes them
    for n in range(count):
        _publish(
            {"id": f"spof-peer:{n}", "host": "spof-peer", "pid": n, "published_at": time.time(), "serving": bulkheads}
        )


def run(*args: str) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("spof_report", *args, stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def report(*args: str) -> tuple[str, dict[str, Any], CommandError | None, CommandError | None]:
    text, text_error = run(*args)
    as_json, json_error = run("--json", *args)
    return text, json.loads(as_json), text_error, json_error


def score(text: str) -> int:
    scores = SCORE_LINE.findall(text)
    assert len(scores) == 1, text
    return int(scores[0])


def row(text: str, level: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(f"{level} ")]
    return line


def assert_scorecard(text: str, body: dict[str, Any]) -> None:
    """The seed's table (risk level, components, current, target), one line per area, the score and the target."""
    lines = text.splitlines()
    assert lines[0] == "SPOF risk scorecard", lines[:2]
    assert re.match(r"^Risk level \| Components +\| Current +\| Target$", lines[1]), lines[1]
    for level, components in ROWS.items():
        line = row(text, level)
        assert components in line, line
        scored = next(r for r in body["scorecard"] if r["level"] == level)
        assert scored["current"] in line and scored["target"] in line, (line, scored)
    for area in body["spofs"]["status"].values():
        assert area["detail"] in text, area["detail"]
    assert score(text) == body["score"]["at_risk"]
    assert lines[-1] == "Target SPOF Score: 1/8 Areas at Risk", lines[-2:]
    assert lines[-2] == f"Current SPOF Score: {body['score']['at_risk']}/8 Areas at Risk"


def assert_json_shape(body: dict[str, Any]) -> None:
    assert list(body["spofs"]["status"]) == HEALTH_AREAS
    assert body["score"]["total"] == 8
    at_risk = [name for name, area in body["spofs"]["status"].items() if area["at_risk"]]
    assert body["score"]["at_risk"] == len(at_risk) and body["spofs"]["at_risk"] == at_risk
    assert [r["level"] for r in body["scorecard"]] == list(ROWS)
    assert body["critical_spofs"] == [a for a in ("database", "authentication", "configuration") if a in at_risk]


# ---- in process ----------------------------------------------------------------------------------------------------


def test_every_area_covered_scores_0_and_exits_0(settings) -> None:
    configure(settings, otlp_endpoints=TRACE_ENDPOINTS)
    peers(2)
    text, body, text_error, json_error = report()
    assert (text_error, json_error) == (None, None)
    assert_json_shape(body)
    assert_scorecard(text, body)
    assert body["score"] == {"at_risk": 0, "total": 8} and body["critical_spofs"] == []
    assert {name: area["status"] for name, area in body["spofs"]["status"].items()} == dict.fromkeys(
        HEALTH_AREAS, "pass"
    )
    for level in ROWS:
        assert "0/3 SPOFs" in row(text, level) or "0/2 SPOFs" in row(text, level), row(text, level)
    assert "AT RISK" not in text


def test_single_trace_endpoint_and_no_serving_worker_score_2_but_exit_0(settings) -> None:
    configure(settings, otlp_endpoints=[], web_concurrency=2)
    text, body, text_error, json_error = report()  # no worker has published: nothing serves
    assert (text_error, json_error) == (None, None)  # medium areas never fail the gate
    assert_json_shape(body)
    assert_scorecard(text, body)
    assert body["spofs"]["at_risk"] == ["telemetry", "serving"] and score(text) == 2
    serving = body["spofs"]["status"]["serving"]
    assert serving["status"] == "fail"
    live = next(c for c in serving["components"] if c["componentId"] == "live")
    assert live["observedValue"] == 0, live
    assert "2/3 SPOFs" in row(text, "Medium") and row(text, "Medium").endswith("❌")  # the target is 1/3
    assert "⚠️  Telemetry: 0 trace endpoint(s): traces stop when it is down — AT RISK\n" in text
    assert "❌ Serving: 0 live worker(s) on 0 host(s) (2 configured per host) — AT RISK: no worker has" in text


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # only the node registry reads it here
def test_no_replica_is_a_critical_spof_and_exits_1(settings) -> None:
    configure(settings, otlp_endpoints=TRACE_ENDPOINTS, replicas=[])
    settings.DATABASES = {alias: entry for alias, entry in settings.DATABASES.items() if alias == PRIMARY}
    reset_registry()  # rebuilt from the settings: the primary alone
    peers(2)
    text, body, text_error, json_error = report()
    for error in (text_error, json_error):
        assert error is not None and error.returncode == 1
        assert "critical single point(s) of failure: database" in str(error)
        assert "single PostgreSQL host" in str(error)
    assert_json_shape(body)
    assert_scorecard(text, body)  # the scorecard is printed before the command fails
    assert body["critical_spofs"] == ["database"] and body["spofs"]["at_risk"] == ["database"]
    assert body["score"]["at_risk"] == 1 and score(text) == 1
    assert "1/3 SPOFs" in row(text, "Critical") and row(text, "Critical").endswith("❌")
    assert "primary only (no replica configured)" in text


def test_a_dead_primary_is_a_critical_spof_now_and_exits_1(settings) -> None:
    configure(settings, otlp_endpoints=TRACE_ENDPOINTS)
    peers(2)
    with dead(PRIMARY):
        text, error = run()
    assert error is not None and error.returncode == 1, text
    assert "critical single point(s) of failure: database" in str(error)
    assert score(text) == 1
    assert re.search(r"^⚠️ +Database: primary down: reads served by replica_1", text, re.MULTILINE), text
    assert "AT RISK: one node left" in text


def test_a_dead_replica_is_a_critical_spof_now_and_exits_1(settings) -> None:
    configure(settings, otlp_endpoints=TRACE_ENDPOINTS)
    peers(2)
    with dead(REPLICA):
        as_json, error = run("--json")
    body = json.loads(as_json)
    assert error is not None and error.returncode == 1
    assert body["critical_spofs"] == ["database"]
    database = body["spofs"]["status"]["database"]
    assert database["detail"] == "every replica down: reads go to the primary" and database["status"] == "warn"


# ---- the real command ----------------------------------------------------------------------------------------------


def manage_spof_report(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "spof_report"],
        cwd=ROOT,
        env={**os.environ, **env},  # the test environment: the stack's DATABASE_URL, REDIS_URL, secrets
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_real_command_prints_the_scorecard_and_its_exit_code_gates() -> None:
    # No trace endpoint, and no gunicorn worker publishing under this process's fresh key prefix: 2 areas at risk.
    ok = manage_spof_report(OTEL_EXPORTER_OTLP_ENDPOINTS="")
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    lines = ok.stdout.strip().splitlines()
    assert lines[0] == "SPOF risk scorecard"
    assert lines[-2:] == ["Current SPOF Score: 2/8 Areas at Risk", "Target SPOF Score: 1/8 Areas at Risk"]
    assert row(ok.stdout, "Critical").endswith("| 0/3 SPOFs   | 0/3 SPOFs ✅")
    assert "✅ Database: primary up, 1 of 1 replica(s) serving reads" in ok.stdout
    # No replica configured: the database is a critical single point of failure, and the process exits 1.
    gated = manage_spof_report(OTEL_EXPORTER_OTLP_ENDPOINTS="", DATABASE_REPLICA_URLS="")
    assert gated.returncode == 1, (gated.stdout, gated.stderr)
    assert "CommandError: critical single point(s) of failure: database" in gated.stderr
    assert gated.stdout.strip().splitlines()[-2] == "Current SPOF Score: 3/8 Areas at Risk"
    assert row(gated.stdout, "Critical").endswith("| 1/3 SPOFs   | 0/3 SPOFs ❌")
