"""``/health``, ``/health/ready`` and ``/health/live`` through the Django test client, against the test stack's real
PostgreSQL primary + replica and real Redis, in each state the issue names: healthy, primary down, replica down,
no node at all, a hung node, Redis down, a breaker open, and a check that hangs.

Nothing is mocked. A node fails for real: its alias points at a port where nothing listens (``tests.helpers.dead``)
or at a listener that accepts and never answers (a hung node), and a request or the monitor's own probe meets it.
In-process tests run no monitor thread, so the node registry learns of a failure only from those real failures
(and of a recovery only from a real probe). Redis fails as a port where nothing listens; a breaker opens on real
500s from the fake gateway on loopback; a hung check is an area check whose ``assess`` blocks for 30 s.

Each test starts from an environment where every area passes, so each fault's effect is visible alone: two trace
endpoints (the test environment has none), the signing-key ring read, a second live worker publishing its
snapshot in Redis (this process is the first), a Redis key prefix of the test's own (no other test's workers).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from devstack.fake_gateway import FakeGateway
from resilience.auth.ring import ring_cache
from resilience.breakers.breaker import State
from resilience.breakers.exceptions import ExternalCircuitOpen, ExternalServerError
from resilience.breakers.http import GuardedHttpClient
from resilience.breakers.registry import breaker_get, reset_breakers
from resilience.cache.backend import redis_name
from resilience.config.schema import CRITICAL_AREAS
from resilience.db.health import DatabaseHealth
from resilience.db.monitor import NodeMonitor
from resilience.db.nodes import PRIMARY, registry, reset_registry
from resilience.health.base import AreaStatus, config_reports_clear
from resilience.health.matrix import AREA_CHECKS
from resilience.health.views import ReadinessView, SpofHealthView
from resilience.health.workers import _publish
from resilience.observability.health import TelemetryHealth
from resilience.observability.tracing import tracing_start, tracing_stop
from tests.factories import ProductFactory, UserFactory
from tests.helpers import HEALTH_AREAS, assert_error, dead, fresh_logging
from tests.redis_servers import HungRedis, dead_redis_cache

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]

HEALTH, READY, LIVE = "/health", "/health/ready", "/health/live"
PATHS = [HEALTH, READY, LIVE]
HEALTH_JSON = "application/health+json"
PROBE_BUDGET = 2.0  # every probe answers within this, whatever hangs (the issue)
HUNG_CHECK_BUDGET = 2.5  # the brief's bound for a check that hangs (CHECK_TIMEOUT + 1 s is 1.7 s)
SEED_AREA_KEYS = {"healthy", "critical", "detail"}
TRACE_ENDPOINTS = ["http://otel-a.invalid:4318", "http://otel-b.invalid:4318"]
PEER = "hlt-peer-host:4242"
REGISTER = {"username": "newcomer", "email": "n@example.com", "password": "correct horse battery staple"}


# ---- an environment where every area passes ---------------------------------------------------------------------


class PeerWorker:
    """A second worker of the fleet: publishes its snapshot to Redis every 0.3 s, as a live worker does."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hlt-peer-worker", daemon=True)

    @staticmethod
    def publish() -> str:
        return _publish({"id": PEER, "host": PEER.rpartition(":")[0], "pid": 4242, "published_at": time.time()})

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.publish()

    def __enter__(self) -> PeerWorker:
        assert self.publish() == "published"  # live before the first probe
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(autouse=True)
def passing(settings, fresh_circuits) -> Iterator[None]:
    cache = {**settings.CACHES["default"], "KEY_PREFIX": f"hlt-{uuid.uuid4().hex[:8]}"}
    settings.CACHES = {**settings.CACHES, "default": cache}
    config = settings.BULWARK_CONFIG
    settings.BULWARK_CONFIG = dataclasses.replace(
        config,
        otlp_endpoints=TRACE_ENDPOINTS,
        web_concurrency=2,  # as the peer and this process: two live workers of two configured
        warnings=[finding for finding in config.warnings if finding.name != "OTEL_EXPORTER_OTLP_ENDPOINTS"],
    )
    fresh_logging()
    config_reports_clear()
    reset_breakers()
    assert ring_cache.refresh(wait=True) is not None
    # As a gunicorn worker does (post_fork): traces to both endpoints; no span is made here, so none is exported.
    assert tracing_start(settings.BULWARK_CONFIG, instrument=False) is not None
    with PeerWorker():
        yield
    tracing_stop(timeout=1)
    reset_breakers()
    config_reports_clear()
    reset_registry()  # every node usable again before the database is flushed


# ---- probing the three endpoints ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Probe:
    path: str
    status: int
    content_type: str
    body: dict[str, Any]
    elapsed: float


def probe(client: Client, path: str, **extra: str) -> Probe:
    started = time.monotonic()
    response = client.get(path, **extra)
    elapsed = time.monotonic() - started
    assert response.status_code not in (301, 302, 307, 308), (path, response.status_code, response.get("Location"))
    return Probe(path, response.status_code, response["Content-Type"], json.loads(response.content), elapsed)


# Readings that change from one call to the next by themselves: the ring's age (seconds since it was read) and
# the log queue's depth (a record of the previous call may still be on its way to the sink).
_MOMENTARY = {("ring", "jwt:ring"), ("queue", "logging:queue_depth")}


def _momentary(entry: dict[str, Any], name: str | None = None) -> bool:
    return (entry.get("componentId"), name or entry.get("component")) in _MOMENTARY


def without_times(body: dict[str, Any]) -> dict[str, Any]:
    """A body without what changes from one call to the next: when it was checked, momentary readings."""
    text = json.dumps(body, sort_keys=True)
    clean = json.loads(text)
    clean.pop("checked_at", None)
    for name, entries in clean.get("checks", {}).items():
        for entry in entries:
            entry.pop("time", None)
            if _momentary(entry, name):
                entry.pop("observedValue", None)
    for area in clean.get("spofs", {}).get("status", {}).values():
        for component in area["components"]:
            if _momentary(component):
                component.pop("observedValue", None)
    return clean


def probe_endpoints(client: Client) -> tuple[dict[str, Any], int, dict[str, Any], int]:
    """All three endpoints, each with and without the trailing slash: checked alike, in time, no redirect.

    Returns /health's body and status, then /health/ready's.
    """
    answers: dict[str, list[Probe]] = {}
    for path in PATHS:
        answers[path] = [probe(client, path), probe(client, path + "/")]
    for path, (bare, slashed) in answers.items():
        for answer in (bare, slashed):
            assert answer.elapsed < PROBE_BUDGET, (answer.path, answer.elapsed)
        assert bare.status == slashed.status, (path, bare.status, slashed.status)
        assert without_times(bare.body) == without_times(slashed.body), path
    health, ready, live = (answers[path][0] for path in PATHS)
    assert health.content_type == "application/json", health.content_type
    assert ready.content_type == HEALTH_JSON, ready.content_type
    assert live.content_type == HEALTH_JSON, live.content_type
    assert (live.status, live.body["status"]) == (200, "pass"), live  # whatever else fails
    assert_health_shape(health.body)
    assert_ready_shape(ready.body)
    # /health and /health/ready tell the same story: one status, 503 exactly when readiness fails.
    assert health.body["status"] == ready.body["status"]
    expected_code = 503 if ready.body["status"] == "fail" else 200
    assert (health.status, ready.status) == (expected_code, expected_code), (health.status, ready.status)
    return health.body, health.status, ready.body, ready.status


def assert_health_shape(body: dict[str, Any]) -> None:
    """The seed's body: ``success``, ``score`` {at_risk, total: 8}, ``spofs`` {critical, status}, counts consistent."""
    assert {"success", "score", "spofs"} <= set(body), body.keys()
    areas = body["spofs"]["status"]
    assert list(areas) == HEALTH_AREAS
    for name, area in areas.items():
        assert SEED_AREA_KEYS <= set(area), (name, area.keys())
        assert isinstance(area["healthy"], bool) and isinstance(area["detail"], str) and area["detail"], area
        assert area["critical"] is (name in CRITICAL_AREAS), (name, area["critical"])
        assert area["status"] in ("pass", "warn", "fail"), area
        assert area["healthy"] is (area["status"] == "pass"), area
        assert area["components"], name
        for component in area["components"]:
            assert component["status"] in ("pass", "warn", "fail"), component
            assert ":" in component["component"] and component["componentId"], component
    at_risk = [name for name, area in areas.items() if area["at_risk"]]
    assert body["score"] == {"at_risk": len(at_risk), "total": 8}, body["score"]
    assert body["spofs"]["at_risk"] == at_risk
    critical = [name for name, area in areas.items() if area["critical"] and not area["healthy"]]
    assert body["spofs"]["critical"] == critical
    assert body["success"] is (not critical)


def assert_ready_shape(body: dict[str, Any]) -> None:
    """draft-inadarei-api-health-check: status, checks keyed ``component:measurement``, entries with componentId."""
    assert body["status"] in ("pass", "warn", "fail"), body
    assert body["checks"], body
    for key, entries in body["checks"].items():
        name, _, measurement = key.partition(":")
        assert name and measurement, key
        assert isinstance(entries, list) and entries, key
        for entry in entries:
            assert {"componentId", "componentType", "status", "time"} <= set(entry), (key, entry)
            assert entry["status"] in ("pass", "warn", "fail"), entry
            assert entry["area"] in HEALTH_AREAS, entry
    worst = max((e["status"] for es in body["checks"].values() for e in es), key=["pass", "warn", "fail"].index)
    if body["status"] == "pass":
        assert worst == "pass" and "output" not in body, body
    else:
        assert body["output"], body  # the areas that are not passing, and why


def component(body: dict[str, Any], area: str, key: str, component_id: str) -> dict[str, Any]:
    """One component of an area in /health's body."""
    found = [
        c
        for c in body["spofs"]["status"][area]["components"]
        if (c["component"], c["componentId"]) == (key, component_id)
    ]
    assert len(found) == 1, (area, key, component_id, body["spofs"]["status"][area]["components"])
    return found[0]


def ready_entry(body: dict[str, Any], key: str, component_id: str) -> dict[str, Any]:
    found = [entry for entry in body["checks"].get(key, []) if entry["componentId"] == component_id]
    assert len(found) == 1, (key, component_id, body["checks"])
    return found[0]


def area_statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: area["status"] for name, area in body["spofs"]["status"].items()}


def all_pass_but(**changed: str) -> dict[str, str]:
    return {area: changed.get(area, "pass") for area in HEALTH_AREAS}


# ---- healthy -------------------------------------------------------------------------------------------------------


def test_healthy_every_area_passes_success_and_no_spof(client) -> None:
    health, code, ready, ready_code = probe_endpoints(client)
    assert (code, ready_code) == (200, 200)
    assert area_statuses(health) == all_pass_but()
    assert health["success"] is True and health["status"] == "pass"
    assert health["score"] == {"at_risk": 0, "total": 8}
    assert health["spofs"]["critical"] == [] and health["spofs"]["at_risk"] == []
    assert ready["status"] == "pass" and "output" not in ready
    for alias in (PRIMARY, REPLICA):
        entry = ready_entry(ready, "postgresql:reachable", alias)
        assert (entry["status"], entry["observedValue"], entry["area"]) == ("pass", True, "database")
    assert ready_entry(ready, "redis:reachable", redis_name(settings.CACHES["default"]["LOCATION"]))["status"] == "pass"
    assert ready_entry(ready, "gunicorn:workers", "live")["observedValue"] == 2  # this process and the peer
    assert ready_entry(ready, "breaker:state", "payment_gateway")["observedValue"] == "closed"
    assert ready_entry(ready, "jwt:signVerify", ring_cache.peek()[0].signer.kid)["status"] == "pass"
    assert health["spofs"]["status"]["database"]["detail"] == "primary up, 1 of 1 replica(s) serving reads"


# ---- the database: primary down, replica down, no node, hung nodes ---------------------------------------------


def test_primary_down_reads_served_is_warn_200_with_database_a_critical_spof(client) -> None:
    ProductFactory()
    with dead(PRIMARY):
        write = client.post("/api/auth/register/", REGISTER, content_type="application/json")
        read = client.get("/api/products/")
    assert_error(write, 503, "read_only_mode")  # the write met the dead primary for real
    assert read.status_code == 200  # and reads are served
    assert registry().state(PRIMARY).reachable is False

    health, code, ready, ready_code = probe_endpoints(client)
    assert (code, ready_code) == (200, 200)  # degraded, not down
    assert ready["status"] == "warn" and health["status"] == "warn"
    assert area_statuses(health) == all_pass_but(database="warn")
    database = health["spofs"]["status"]["database"]
    assert database["healthy"] is False and database["at_risk"] is True
    assert database["detail"] == f"primary down: reads served by {REPLICA}, writes refused (503)"
    assert database["risk"] == "one node left: its failure stops the service"
    assert health["spofs"]["critical"] == ["database"] and health["success"] is False
    assert health["score"] == {"at_risk": 1, "total": 8} and health["spofs"]["at_risk"] == ["database"]
    primary = ready_entry(ready, "postgresql:reachable", PRIMARY)
    assert (primary["status"], primary["observedValue"]) == ("fail", False)
    assert primary["output"] and primary["output"] == registry().state(PRIMARY).last_error  # the refused connection
    assert ready_entry(ready, "postgresql:reachable", REPLICA)["status"] == "pass"
    assert ready["output"].startswith("database: primary down")
    assert component(health, "database", "postgresql:reachable", PRIMARY)["status"] == "fail"

    # The monitor's next good probe of the primary brings it back: every area passes again.
    monitor = NodeMonitor(registry())
    try:
        monitor.probe_all()
    finally:
        monitor.close()
    health, code, ready, _ = probe_endpoints(client)
    assert code == 200 and health["status"] == "pass" and area_statuses(health) == all_pass_but()
    assert health["score"]["at_risk"] == 0


@pytest.mark.replica_routing
def test_replica_down_is_warn_200_reads_on_the_primary(client) -> None:
    ProductFactory()
    with dead(REPLICA):
        read = client.get("/api/products/")  # routed to the replica, refused, run again on the primary
    assert read.status_code == 200 and read.json()["count"] == 1
    assert registry().state(REPLICA).reachable is False and registry().state(PRIMARY).reachable is True

    health, code, ready, ready_code = probe_endpoints(client)
    assert (code, ready_code) == (200, 200)
    assert ready["status"] == "warn"
    assert area_statuses(health) == all_pass_but(database="warn")
    database = health["spofs"]["status"]["database"]
    assert database["detail"] == "every replica down: reads go to the primary"
    assert database["at_risk"] is True and health["spofs"]["at_risk"] == ["database"]
    assert health["spofs"]["critical"] == ["database"]
    replica = ready_entry(ready, "postgresql:reachable", REPLICA)
    assert (replica["status"], replica["observedValue"]) == ("fail", False) and replica["output"]
    assert ready_entry(ready, "postgresql:reachable", PRIMARY)["status"] == "pass"
    assert "postgresql:lag" not in ready["checks"]  # no lag is reported for a replica that does not answer


@pytest.mark.replica_routing
def test_no_node_at_all_is_fail_503_and_live_still_200(client) -> None:
    with dead(PRIMARY, REPLICA):
        read = client.get("/api/products/")
    assert read.status_code == 503, read.content  # nothing could serve it
    assert registry().state(PRIMARY).reachable is False and registry().state(REPLICA).reachable is False

    health, code, ready, ready_code = probe_endpoints(client)  # also checks /health/live: 200 pass
    assert (code, ready_code) == (503, 503)
    assert ready["status"] == "fail" and health["status"] == "fail"
    assert area_statuses(health) == all_pass_but(database="fail")
    database = health["spofs"]["status"]["database"]
    assert database["detail"] == "no database node answers: nothing can be read or written"
    assert database["risk"] == "no node left"
    assert health["success"] is False and health["spofs"]["critical"] == ["database"]
    assert health["score"] == {"at_risk": 1, "total": 8}
    for alias in (PRIMARY, REPLICA):
        assert ready_entry(ready, "postgresql:reachable", alias)["status"] == "fail"


@contextmanager
def hung(*aliases: str) -> Iterator[None]:
    """These aliases point at a listener that accepts connections and never answers: a stopped (SIGSTOP) server."""
    with ExitStack() as stack:
        for alias in aliases:
            listener = HungRedis()  # a bare TCP listener: it speaks no protocol at all, Redis or PostgreSQL
            stack.callback(listener.close)
            node = connections[alias]
            node.close()
            original = node.settings_dict["PORT"]
            node.settings_dict["PORT"] = str(listener.sock.getsockname()[1])
            stack.callback(node.settings_dict.__setitem__, "PORT", original)
            stack.callback(node.close)
        yield


@pytest.mark.parametrize(
    ("alias", "detail"),
    [
        (PRIMARY, f"primary down: reads served by {REPLICA}, writes refused (503)"),
        (REPLICA, "every replica down: reads go to the primary"),
    ],
)
def test_a_hung_node_is_failed_with_output_timeout_and_probes_stay_fast(client, alias, detail) -> None:
    monitor = NodeMonitor(registry())
    with hung(alias):
        started = time.monotonic()
        try:
            monitor.probe_all()  # the monitor's probe meets the hung node and gives up at its deadline
        finally:
            monitor.close()
        probed_in = time.monotonic() - started
        health, code, ready, ready_code = probe_endpoints(client)  # while the node still hangs
    assert probed_in < monitor.deadline + 1.0, probed_in
    assert registry().state(alias).last_error.startswith("timeout"), registry().state(alias).last_error
    assert (code, ready_code) == (200, 200) and ready["status"] == "warn"
    assert area_statuses(health) == all_pass_but(database="warn")
    assert health["spofs"]["status"]["database"]["detail"] == detail
    entry = ready_entry(ready, "postgresql:reachable", alias)
    assert (entry["status"], entry["output"]) == ("fail", "timeout")
    assert component(health, "database", "postgresql:reachable", alias)["output"] == "timeout"
    other = REPLICA if alias == PRIMARY else PRIMARY
    assert ready_entry(ready, "postgresql:reachable", other)["status"] == "pass"


# ---- Redis down, a breaker open -----------------------------------------------------------------------------------


def test_redis_down_is_rate_limit_warn_200_counting_in_memory(client, settings) -> None:
    settings.CACHES = {"default": dead_redis_cache()}
    settings.RATELIMIT_ENABLE = True
    login = client.post(
        "/api/auth/token/", {"username": "nobody", "password": "wrong"}, content_type="application/json"
    )
    assert login.status_code == 401, login.content  # counted in memory: the failed Redis call fell back
    health, code, ready, ready_code = probe_endpoints(client)
    assert (code, ready_code) == (200, 200) and ready["status"] == "warn"
    # Without Redis this worker cannot see the others: the live count is unknown (warn), not a SPOF with 2 configured.
    assert area_statuses(health) == all_pass_but(rateLimit="warn", serving="warn")
    rate_limit = health["spofs"]["status"]["rateLimit"]
    assert rate_limit["detail"] == "Redis down: each worker counts its share of every limit in memory"
    assert rate_limit["at_risk"] is True and rate_limit["risk"] == "counters are per worker until Redis is back"
    assert health["spofs"]["at_risk"] == ["rateLimit"] and health["score"]["at_risk"] == 1
    assert health["spofs"]["critical"] == [] and health["success"] is True
    redis_entry = ready_entry(ready, "redis:reachable", redis_name(settings.CACHES["default"]["LOCATION"]))
    assert (redis_entry["status"], redis_entry["observedValue"]) == ("fail", False) and redis_entry["output"]
    store = ready_entry(ready, "ratelimit:store", "memory")
    assert (store["status"], store["observedValue"]) == ("warn", "memory")
    live = ready_entry(ready, "gunicorn:workers", "live")
    assert live["status"] == "warn" and "Redis is down" in live["output"]


@pytest.fixture
def gateway_breaker(settings) -> Iterator[GuardedHttpClient]:
    """The payment gateway's breaker (opens after 2 failures) with a client to the fake gateway on loopback."""
    settings.BULWARK_BREAKERS = {"payment_gateway": {"failure_threshold": 2, "reset_timeout": 60}}
    reset_breakers()
    with FakeGateway(mode="fail") as gateway:
        yield GuardedHttpClient(
            service="payment_gateway",
            base_url=gateway.url,
            breaker=breaker_get("payment_gateway"),
            connect_timeout=1.0,
            read_timeout=1.0,
        )
    reset_breakers()


def test_breaker_open_is_circuit_breakers_warn_200(client, gateway_breaker) -> None:
    for _ in range(2):
        with pytest.raises(ExternalServerError):
            gateway_breaker.request("GET", "/charges/k1")
    with pytest.raises(ExternalCircuitOpen):
        gateway_breaker.request("GET", "/charges/k1")
    assert gateway_breaker.breaker.state is State.OPEN

    health, code, ready, ready_code = probe_endpoints(client)
    assert (code, ready_code) == (200, 200) and ready["status"] == "warn"
    assert area_statuses(health) == all_pass_but(circuitBreakers="warn")
    breakers = health["spofs"]["status"]["circuitBreakers"]
    assert breakers["detail"] == "falling back for payment_gateway; the rest call through"
    assert breakers["at_risk"] is False and health["score"]["at_risk"] == 0  # it falls back: not a SPOF
    assert health["success"] is True and health["spofs"]["critical"] == []
    entry = ready_entry(ready, "breaker:state", "payment_gateway")
    assert (entry["status"], entry["observedValue"]) == ("warn", "open")
    assert entry["output"].startswith("open after 2 failure(s)"), entry


# ---- a check that hangs ------------------------------------------------------------------------------------------

RELEASE = threading.Event()  # set at the end of each hung-check test: the blocked check threads finish


class HungTelemetry(TelemetryHealth):
    def assess(self) -> AreaStatus:
        RELEASE.wait(30)
        return super().assess()


class HungDatabase(DatabaseHealth):
    def assess(self) -> AreaStatus:
        RELEASE.wait(30)
        return super().assess()


def _with(check: type) -> list[type]:
    return [check if c.area == check.area else c for c in AREA_CHECKS]


# The hung checks' URLconf (pytest.mark.urls): the real views with one area's check replaced.
urlpatterns = [
    re_path(r"^health/?$", csrf_exempt(SpofHealthView.as_view(checks=_with(HungTelemetry)))),
    re_path(r"^health/ready/?$", csrf_exempt(ReadinessView.as_view(checks=_with(HungTelemetry)))),
    re_path(r"^db/health/?$", csrf_exempt(SpofHealthView.as_view(checks=_with(HungDatabase)))),
    re_path(r"^db/health/ready/?$", csrf_exempt(ReadinessView.as_view(checks=_with(HungDatabase)))),
]


@pytest.fixture
def release_hung_checks() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


def timed_get(client: Client, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


@pytest.mark.urls(__name__)
@pytest.mark.usefixtures("release_hung_checks")
@pytest.mark.parametrize("path", ["/health", "/health/"])
def test_a_hung_check_answers_in_time_with_that_area_failed_timeout(client, path) -> None:
    response, elapsed = timed_get(client, path)
    assert elapsed < HUNG_CHECK_BUDGET, elapsed
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert_health_shape(body)
    assert area_statuses(body) == all_pass_but(telemetry="fail")
    telemetry = body["spofs"]["status"]["telemetry"]
    assert telemetry["detail"] == "the telemetry check did not answer within 0.7s"
    assert telemetry["at_risk"] is True and telemetry["risk"] == "its state is unknown"
    assert component(body, "telemetry", "telemetry:responseTime", "telemetry")["output"] == "timeout"
    assert body["status"] == "warn" and body["spofs"]["critical"] == []  # telemetry is not needed to serve

    ready, elapsed = timed_get(client, path.replace("/health", "/health/ready").replace("ready//", "ready/"))
    assert elapsed < HUNG_CHECK_BUDGET, elapsed
    assert ready.status_code == 200 and ready["Content-Type"] == HEALTH_JSON
    ready_body = ready.json()
    assert_ready_shape(ready_body)
    assert ready_body["status"] == "warn"
    entry = ready_entry(ready_body, "telemetry:responseTime", "telemetry")
    assert (entry["status"], entry["output"], entry["area"]) == ("fail", "timeout", "telemetry")


@pytest.mark.urls(__name__)
@pytest.mark.usefixtures("release_hung_checks")
def test_a_hung_database_check_is_fail_503_in_time(client) -> None:
    for path in ("/db/health", "/db/health/ready"):
        response, elapsed = timed_get(client, path)
        assert elapsed < HUNG_CHECK_BUDGET, (path, elapsed)
        assert response.status_code == 503, (path, response.content[:500])
        body = response.json()
        assert body["status"] == "fail"
    health = client.get("/db/health").json()
    assert_health_shape(health)
    assert area_statuses(health) == all_pass_but(database="fail")
    assert health["spofs"]["critical"] == ["database"] and health["success"] is False
    ready = client.get("/db/health/ready").json()
    entry = ready_entry(ready, "database:responseTime", "database")
    assert (entry["status"], entry["output"]) == ("fail", "timeout")


# ---- HTTP: methods, rate limits, the staff page -------------------------------------------------------------------


@pytest.mark.parametrize("path", [p + slash for p in PATHS for slash in ("", "/")])
def test_head_answers_like_get_without_a_redirect(client, path) -> None:
    response = client.head(path)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"] == ("application/json" if path.rstrip("/") == HEALTH else HEALTH_JSON)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", [p + slash for p in PATHS for slash in ("", "/")])
def test_other_methods_get_the_json_405_envelope(path, method) -> None:
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD"


def test_probes_are_never_rate_limited(client, settings) -> None:
    day = 86400
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {
        scope: (3, day) for scope in ("api", "login", "login_user", "register", "refresh", "checkout")
    }
    address = {"REMOTE_ADDR": "10.214.3.7"}
    paths = [p + slash for p in PATHS for slash in ("", "/")]
    codes = [client.get(paths[n % len(paths)], **address).status_code for n in range(60)]
    assert codes == [200] * 60, codes
    # The limits are really on: the API refuses the same client its fourth request.
    api = [client.get("/api/products/", **address).status_code for _ in range(4)]
    assert api == [200, 200, 200, 429], api


@pytest.mark.parametrize("path", ["/health/checks", "/health/checks/"])
def test_checks_page_sends_anonymous_and_non_staff_to_the_admin_login(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"
    client.force_login(UserFactory(is_staff=False))
    assert client.get(path).status_code == 302


@pytest.mark.parametrize("path", ["/health/checks", "/health/checks/"])
def test_checks_page_answers_staff_in_html_and_json(client, path) -> None:
    client.force_login(UserFactory(is_staff=True))
    page = client.get(path, HTTP_ACCEPT="text/html")
    assert page.status_code == 200, page.content[:500]
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    for check in AREA_CHECKS:
        assert check.__name__ in html, check.__name__
    as_json = client.get(path, {"format": "json"})
    assert as_json.status_code == 200 and as_json["Content-Type"] == "application/json"
    assert as_json.json() == {f"{check.__name__}()": "OK" for check in AREA_CHECKS}


def test_checks_page_shows_a_degraded_area_to_staff(client, gateway_breaker) -> None:
    client.force_login(UserFactory(is_staff=True))
    for _ in range(2):
        with pytest.raises(ExternalServerError):
            gateway_breaker.request("GET", "/charges/k1")
    as_json = client.get("/health/checks/", {"format": "json"})
    # django-health-check's own rule: any warning or failure makes its page a 500.
    assert as_json.status_code == 500 and as_json["Content-Type"] == "application/json"
    body = as_json.json()
    assert body.pop("CircuitBreakersHealth()") == "Warning: falling back for payment_gateway; the rest call through"
    assert body == {f"{check.__name__}()": "OK" for check in AREA_CHECKS if check.area != "circuitBreakers"}
    text = client.get("/health/checks/", {"format": "text"})
    assert "CircuitBreakersHealth(): Warning: falling back for payment_gateway" in text.content.decode()
