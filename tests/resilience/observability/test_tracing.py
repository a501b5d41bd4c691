"""Traces to two OTLP/HTTP endpoints, each on its own: two local receivers (``http.server`` threads on loopback
answering ``POST /v1/traces``), one killed (nothing listening), then one hung (accepts, never answers).

The other receiver still gets every span, ending spans does not slow down, what the failing one misses is
counted as dropped, its health shows it down, and once it is back spans reach it again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.util.http import parse_excluded_urls
from prometheus_client import REGISTRY

from resilience.health.base import config_reports_clear
from resilience.observability import tracing
from resilience.observability.health import TelemetryHealth
from tests.helpers import poll

EXPORT_TIMEOUT = 0.5  # seconds, per batch and endpoint: a hung receiver holds its export thread this long


class Receiver:
    """A minimal OTLP/HTTP collector: counts the spans it is sent. ``kill`` closes its port (connection refused),
    ``hang`` makes it accept requests and never answer, ``revive`` / ``unhang`` put it back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, str]] = []  # (span name, trace id hex)
        self.records: list[dict[str, Any]] = []  # every span: names, ids, kind, scope, attributes
        self.resources: list[dict[str, object]] = []
        self.hanging = False
        self.released = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self._serve()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if receiver.hanging:
                    receiver.released.wait(30)
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        receiver.resources.append(
                            {
                                a.key: a.value.string_value or a.value.int_value
                                for a in resource_spans.resource.attributes
                            }
                        )
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append((span.name, span.trace_id.hex()))
                                receiver.records.append(
                                    {
                                        "name": span.name,
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent_span_id": span.parent_span_id.hex(),
                                        "kind": span.kind,
                                        "scope": scope_spans.scope.name,
                                        "attributes": {
                                            a.key: a.value.string_value or a.value.int_value for a in span.attributes
                                        },
                                    }
                                )
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def kill(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def revive(self) -> None:
        self._serve()

    def hang(self) -> None:
        self.released.clear()
        self.hanging = True

    def unhang(self) -> None:
        self.hanging = False
        self.released.set()

    def close(self) -> None:
        self.unhang()
        if self.server is not None:
            self.kill()

    def traces(self, name: str) -> set[str]:
        with self.lock:
            return {trace_id for span_name, trace_id in self.spans if span_name == name}


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(), Receiver()
    try:
        yield a, b
    finally:
        tracing.tracing_stop(timeout=1)
        a.close()
        b.close()


def start(*receivers: Receiver, **options: int) -> TracerProvider:
    config = SimpleNamespace(otlp_endpoints=[r.endpoint for r in receivers])
    provider = tracing.tracing_start(
        config, instrument=False, schedule_delay_millis=50, export_timeout=EXPORT_TIMEOUT, **options
    )
    assert provider is not None
    return provider


def requests_traced(
    provider: TracerProvider, name: str, count: int, durations: list[float] | None = None, pace: float = 0.0
) -> set[str]:
    """``count`` request-like traces (a server span with a database child span); their trace ids. Each one's
    time goes to ``durations``; ``pace`` seconds pass between two, as between requests."""
    tracer = provider.get_tracer("test")
    trace_ids = set()
    for _ in range(count):
        started = time.perf_counter()
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER) as span:
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
                pass
            trace_ids.add(format(span.get_span_context().trace_id, "032x"))
        if durations is not None:
            durations.append(time.perf_counter() - started)
        time.sleep(pace)
    return trace_ids


def wait_received(receiver: Receiver, name: str, trace_ids: set[str], timeout: float = 10) -> None:
    poll(lambda: receiver.traces(name) >= trace_ids, timeout=timeout, interval=0.02)


def health_of(receiver: Receiver) -> dict[str, object]:
    (state,) = [s for s in tracing.tracing_health()["endpoints"] if s["endpoint"] == receiver.endpoint]
    return state


def dropped_metric(receiver: Receiver) -> float:
    return REGISTRY.get_sample_value("bulwark_spans_dropped_total", {"endpoint": receiver.endpoint}) or 0.0


def up_metric(receiver: Receiver) -> float | None:
    return REGISTRY.get_sample_value("bulwark_span_exporter_up", {"endpoint": receiver.endpoint})


def test_both_endpoints_receive_every_trace(receivers: tuple[Receiver, Receiver]) -> None:
    a, b = receivers
    provider = start(a, b)
    assert tracing.tracing_start(SimpleNamespace(otlp_endpoints=["http://127.0.0.1:9"])) is provider  # idempotent
    sent = requests_traced(provider, "GET /api/products/", 50)
    for receiver in (a, b):
        wait_received(receiver, "GET /api/products/", sent)
        assert receiver.traces("SELECT") == sent  # the child spans travel with their trace
        assert {"service.name": "bulwark"}.items() <= receiver.resources[0].items()
        assert {"host.name", "process.pid"} <= receiver.resources[0].keys()
        poll(lambda r=receiver: health_of(r)["up"] is True, timeout=5)
        assert health_of(receiver)["dropped"] == 0
        assert up_metric(receiver) == 1


def test_a_killed_endpoint_loses_its_spans_only_and_gets_them_again_when_back(
    receivers: tuple[Receiver, Receiver],
) -> None:
    a, b = receivers
    provider = start(a, b)
    b.kill()
    sent = requests_traced(provider, "while-b-down", 40)
    wait_received(a, "while-b-down", sent)
    poll(lambda: health_of(b)["dropped"] >= 80, timeout=10)  # 40 server spans + 40 child spans
    state = health_of(b)
    assert state["up"] is False
    assert "Connection" in state["last_error"], state  # the reason, not just "failed"
    assert dropped_metric(b) == state["dropped"]
    assert up_metric(b) == 0
    assert health_of(a)["up"] is True and health_of(a)["dropped"] == 0

    b.revive()
    after = set()

    def flows_again() -> bool:
        after.update(requests_traced(provider, "after-b-back", 2))
        return bool(b.traces("after-b-back"))

    poll(flows_again, timeout=10, interval=0.2)
    later = requests_traced(provider, "later", 20)
    wait_received(b, "later", later)
    wait_received(a, "later", later)
    wait_received(a, "after-b-back", after)
    poll(lambda: health_of(b)["up"] is True, timeout=5)
    assert up_metric(b) == 1


def test_a_hung_endpoint_slows_no_request_and_drops_only_its_own_spans(
    receivers: tuple[Receiver, Receiver],
) -> None:
    a, b = receivers
    provider = start(a, b, max_queue_size=64, max_export_batch_size=16)
    wait_received(b, "warm-up", requests_traced(provider, "warm-up", 5))
    poll(lambda: health_of(b)["up"] is True, timeout=5)

    b.hang()
    durations: list[float] = []
    sent = requests_traced(provider, "while-b-hung", 300, durations, pace=0.002)
    # With a hung collector an export waits EXPORT_TIMEOUT: had a span's end waited for it even once, the
    # slowest "request" would take that long, and all of them together several times that.
    assert max(durations) < EXPORT_TIMEOUT / 5, max(durations)
    assert sum(durations) < EXPORT_TIMEOUT, sum(durations)
    wait_received(a, "while-b-hung", sent)
    assert a.traces("SELECT") >= sent
    # 600 spans through a 64-span queue whose export thread is stuck: most are dropped, and counted; A's queue
    # (as small) keeps up, since its collector answers.
    poll(lambda: health_of(b)["dropped"] >= 600 - 64 - 16, timeout=10)
    poll(lambda: health_of(b)["up"] is False, timeout=5)
    assert dropped_metric(b) == health_of(b)["dropped"]
    assert health_of(a)["dropped"] == 0 and health_of(a)["up"] is True

    b.unhang()

    def flows_again() -> bool:
        requests_traced(provider, "after-b-back", 2)
        return bool(b.traces("after-b-back"))

    poll(flows_again, timeout=10, interval=0.2)
    later = requests_traced(provider, "later", 20)
    wait_received(b, "later", later)
    poll(lambda: health_of(b)["up"] is True, timeout=5)


def test_only_traces_started_by_a_request_are_exported(receivers: tuple[Receiver, Receiver]) -> None:
    a, b = receivers
    provider = start(a, b)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("probe SELECT 1", kind=SpanKind.CLIENT):  # the DB monitor's probe
        pass
    with tracer.start_as_current_span("publish snapshot", kind=SpanKind.INTERNAL):
        pass
    sent = requests_traced(provider, "GET /api/cart/", 1)
    wait_received(a, "GET /api/cart/", sent)
    assert not a.traces("probe SELECT 1") and not a.traces("publish snapshot")


def test_no_endpoint_starts_nothing() -> None:
    assert tracing.tracing_start(SimpleNamespace(otlp_endpoints=[]), instrument=False) is None
    assert tracing.tracing_health() == {"running": False, "endpoints": []}


def test_health_and_metrics_requests_are_excluded_from_django_traces() -> None:
    excluded = parse_excluded_urls(tracing.EXCLUDED_URLS)
    for url in ("http://h/health?", "http://h:8000/health/ready?", "http://h/health/checks/?", "http://h/metrics?"):
        assert excluded.url_disabled(url), url
    for url in ("http://h/api/products/?", "http://h/healthz?", "http://h/api/health/?", "http://h/admin/?"):
        assert not excluded.url_disabled(url), url


def test_log_records_carry_the_current_trace_and_span_ids() -> None:
    provider = TracerProvider()
    log_filter = tracing.TraceContextLogFilter()
    outside = logging.makeLogRecord({"msg": "outside"})
    log_filter.filter(outside)
    assert (outside.trace_id, outside.span_id) == ("", "")
    assert tracing.current_trace_ids() is None
    with provider.get_tracer("test").start_as_current_span("request") as span:
        inside = logging.makeLogRecord({"msg": "inside"})
        assert log_filter.filter(inside) is True
        context = span.get_span_context()
    assert inside.trace_id == format(context.trace_id, "032x") and len(inside.trace_id) == 32
    assert inside.span_id == format(context.span_id, "016x")


def test_log_filter_install_adds_the_filter_once() -> None:
    root = logging.Logger("test-root")
    root.addHandler(logging.StreamHandler())
    root.addHandler(logging.NullHandler())
    assert tracing.log_filter_install(root) == 2
    assert tracing.log_filter_install(root) == 0


@pytest.fixture
def configured(settings: Any, receivers: tuple[Receiver, Receiver]) -> Iterator[tuple[Receiver, Receiver]]:
    """The two receivers are also the configured endpoints (the area's risk comes from the configuration)."""
    a, b = receivers
    settings.BULWARK_CONFIG = dataclasses.replace(settings.BULWARK_CONFIG, otlp_endpoints=[a.endpoint, b.endpoint])
    config_reports_clear()
    yield receivers
    config_reports_clear()


def test_the_telemetry_area_shows_each_exporter(configured: tuple[Receiver, Receiver]) -> None:
    a, b = configured
    provider = start(a, b)
    wait_received(a, "first", requests_traced(provider, "first", 1))
    poll(lambda: health_of(b)["up"] is True, timeout=5)
    status = TelemetryHealth().assess()
    exporters = {c.component_id: c for c in status.components if c.measurement == "exporter"}
    assert {e.status for e in exporters.values()} == {"pass"} and set(exporters) == {a.endpoint, b.endpoint}
    assert status.status == "pass" and not status.at_risk, status

    b.kill()
    requests_traced(provider, "b-down", 5)
    poll(lambda: health_of(b)["dropped"] >= 10, timeout=10)
    status = TelemetryHealth().assess()
    components = {(c.measurement, c.component_id): c for c in status.components}
    assert components["exporter", b.endpoint].status == "warn"  # one of two: traces still leave
    assert "Connection" in components["exporter", b.endpoint].output
    assert components["dropped", b.endpoint].status == "warn"
    assert components["dropped", b.endpoint].observed_value >= 10
    assert components["exporter", a.endpoint].status == "pass"
    assert status.status == "warn" and status.at_risk  # one exporter up: a single point of failure now

    a.kill()
    requests_traced(provider, "both-down", 5)
    poll(lambda: health_of(a)["up"] is False, timeout=10)
    status = TelemetryHealth().assess()
    assert status.status == "fail"  # no trace leaves the process
