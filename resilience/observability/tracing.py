"""Traces: OpenTelemetry spans exported over OTLP/HTTP to every configured endpoint, each on its own.

``tracing_start(config)`` (called by each gunicorn worker in ``post_fork``, before the worker loads the
application, because the Django instrumentor inserts its middleware into ``settings.MIDDLEWARE`` and Django's
handler reads that list once when it is built) makes one ``TracerProvider`` (resource ``service.name=bulwark``,
host, pid) and instruments Django (``/health*`` and ``/metrics`` excluded), psycopg 3, Redis and urllib3 (the
payment gateway's client).

Each endpoint of ``OTEL_EXPORTER_OTLP_ENDPOINTS`` gets its own ``BatchSpanProcessor``: its own bounded queue
(``MAX_QUEUE_SIZE`` spans), its own export thread and a short export deadline (``EXPORT_TIMEOUT`` seconds,
retries included). Ending a span only appends it to each queue, so a request never waits for a collector.

When a collector fails:

- down (connection refused) or hung (accepts, never answers): its export thread gives up on a batch within
  ``EXPORT_TIMEOUT``; the batch is dropped and counted (``bulwark_spans_dropped_total{endpoint}``), the
  endpoint shows down (``bulwark_span_exporter_up{endpoint}`` = 0) with its last error in ``tracing_health()``.
  While its thread waits, its queue fills and further spans for it are dropped and counted; the other
  endpoints' queues and threads are untouched, so they still receive every span.
- back: the next batch succeeds, the endpoint shows up again, spans flow (what was dropped is not resent).

Only traces that start at a request are kept (``ParentBased`` over server spans): the database monitor's
probes, the snapshot publisher's Redis writes and other background work are not exported as root spans.
Tests export nothing unless they start tracing with endpoints; without endpoints ``tracing_start`` does nothing.

At exit (``atexit``) ``tracing_stop`` sends what is queued, waiting at most ``SHUTDOWN_TIMEOUT`` seconds for all
endpoints together. ``TraceContextLogFilter`` adds ``trace_id`` and ``span_id`` (hex, ``""`` outside a span) to
log records.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from prometheus_client import Counter, Gauge

logger = logging.getLogger(__name__)

MAX_QUEUE_SIZE = 2048  # spans waiting per endpoint; beyond it new spans for that endpoint are dropped
MAX_EXPORT_BATCH_SIZE = 512
SCHEDULE_DELAY_MILLIS = 1000  # a batch leaves at least every second
EXPORT_TIMEOUT = 2.0  # seconds one batch may take at one endpoint, retries included
SHUTDOWN_TIMEOUT = 2.0  # seconds tracing_stop waits for the last spans, all endpoints together
DROP_WARN_WINDOW = 60.0  # seconds a drop keeps the endpoint's health at warn
# Django's instrumentor searches these regular expressions in the absolute URL (commas separate them).
EXCLUDED_URLS = r"^https?://[^/]+/(?:health|metrics)(?:[/?]|$)"
REQUEST_ID_ATTRIBUTE = "bulwark.request_id"

SPANS_DROPPED = Counter(
    "bulwark_spans_dropped",
    "Spans not delivered to an OTLP endpoint: its queue was full or its export failed.",
    ["endpoint"],
)
EXPORTER_UP = Gauge(
    "bulwark_span_exporter_up",
    "1 after a successful export to this OTLP endpoint, 0 after a failed one.",
    ["endpoint"],
    multiprocess_mode="livemin",
)


@dataclass
class EndpointState:
    """What one endpoint's exporter has done in this process."""

    endpoint: str
    up: bool | None = None  # None: no export tried yet
    exported: int = 0
    dropped: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    last_drop_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def exported_ok(self, count: int) -> None:
        with self.lock:
            self.up = True
            self.exported += count
        EXPORTER_UP.labels(self.endpoint).set(1)

    def export_failed(self, count: int, error: str) -> None:
        now = time.time()
        with self.lock:
            was_up = self.up
            self.up = False
            self.dropped += count
            self.last_error = error or self.last_error or "export failed"
            self.last_error_at = self.last_drop_at = now
        EXPORTER_UP.labels(self.endpoint).set(0)
        SPANS_DROPPED.labels(self.endpoint).inc(count)
        if was_up is not False:  # once per outage, not once per batch
            logger.warning("trace endpoint %s is down, %d span(s) dropped: %s", self.endpoint, count, error)

    def queue_full(self) -> None:
        with self.lock:
            self.dropped += 1
            self.last_drop_at = time.time()
        SPANS_DROPPED.labels(self.endpoint).inc()

    def error(self, message: str) -> None:
        with self.lock:
            self.last_error = message

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "endpoint": self.endpoint,
                "up": self.up,
                "exported": self.exported,
                "dropped": self.dropped,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "last_drop_at": self.last_drop_at,
            }


class _ErrorRecordingSession(requests.Session):
    """The exporter's HTTP session: remembers why the last request to the endpoint failed (the exporter itself
    only says success or failure)."""

    def __init__(self, state: EndpointState) -> None:
        super().__init__()
        self._state = state

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            self._state.error(f"{type(error).__name__}: {error}")
            raise
        if not 200 <= response.status_code < 400:
            self._state.error(f"HTTP {response.status_code} {response.reason}")
        return response


class _RecordingExporter(SpanExporter):
    """Wraps one endpoint's ``OTLPSpanExporter``: a failed batch is counted as dropped and marks it down."""

    def __init__(self, inner: SpanExporter, state: EndpointState) -> None:
        self._inner = inner
        self._state = state

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as error:  # noqa: BLE001 - the batch is lost either way: counted, the thread lives on
            self._state.export_failed(len(spans), f"{type(error).__name__}: {error}")
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._state.exported_ok(len(spans))
        else:
            self._state.export_failed(len(spans), self._state.last_error)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans it drops because its queue is full (the SDK drops them
    with a log line only). opentelemetry-sdk is pinned; tests/resilience/observability/test_tracing.py fails
    if its batch processor stops keeping ``_queue`` / ``_max_queue_size``."""

    def __init__(self, exporter: SpanExporter, state: EndpointState, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self.state = state
        self._inner_processor = self._batch_processor
        self._queue = self._inner_processor._queue
        self._capacity = self._inner_processor._max_queue_size

    def on_end(self, span: ReadableSpan) -> None:
        if span.context and span.context.trace_flags.sampled and len(self._queue) >= self._capacity:
            self.state.queue_full()  # the SDK drops the oldest span waiting to make room
        super().on_end(span)

    def shutdown_within(self, seconds: float) -> None:
        self._inner_processor.shutdown(timeout_millis=int(seconds * 1000))


class ServerRootSampler(Sampler):
    """Keep a trace only when its root is a server span (a request): background work is not exported."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if kind is SpanKind.SERVER else Decision.DROP
        return SamplingResult(decision, attributes if decision is Decision.RECORD_AND_SAMPLE else None, trace_state)

    def get_description(self) -> str:
        return "ServerRootSampler"


@dataclass
class _Tracing:
    provider: TracerProvider
    processors: list[_CountingBatchSpanProcessor]
    pid: int


_lock = threading.Lock()
_tracing: _Tracing | None = None
_global_provider_set = False
_exit_hook_registered = False


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of an endpoint given as a base URL (``http://collector:4318``) or in full."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _response_hook(span: trace.Span, request: Any, response: Any) -> None:
    request_id = getattr(request, "request_id", None)
    if request_id and span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")  # as settings/wsgi.py, before it runs
    instrumentors: list[tuple[Any, dict[str, Any]]] = [
        (DjangoInstrumentor(), {"excluded_urls": EXCLUDED_URLS, "response_hook": _response_hook}),
        (PsycopgInstrumentor(), {}),
        (RedisInstrumentor(), {}),
        (URLLib3Instrumentor(), {}),
    ]
    for instrumentor, options in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider, **options)


def tracing_start(
    config: Any,
    *,
    instrument: bool = True,
    max_queue_size: int = MAX_QUEUE_SIZE,
    max_export_batch_size: int = MAX_EXPORT_BATCH_SIZE,
    schedule_delay_millis: int = SCHEDULE_DELAY_MILLIS,
    export_timeout: float = EXPORT_TIMEOUT,
) -> TracerProvider | None:
    """Start exporting spans to every endpoint in ``config.otlp_endpoints``; idempotent per process.

    Returns the provider, or None when no endpoint is configured (nothing is instrumented then). A collector
    that is down or hung at start costs nothing here: exports happen on each endpoint's own thread.
    ``instrument=False`` (tests) makes the provider without instrumenting libraries or setting it globally.
    """
    global _tracing, _global_provider_set, _exit_hook_registered
    endpoints = list(config.otlp_endpoints)
    with _lock:
        if _tracing is not None and _tracing.pid == os.getpid():
            return _tracing.provider
        if not endpoints:
            return None
        resource = Resource.create(
            {"service.name": "bulwark", "host.name": socket.gethostname(), "process.pid": os.getpid()}
        )
        # Not the SDK's own exit hook: it waits up to 30 s per endpoint, one after the other.
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(root=ServerRootSampler()), shutdown_on_exit=False
        )
        processors = []
        for endpoint in endpoints:
            state = EndpointState(endpoint)
            exporter = OTLPSpanExporter(
                endpoint=traces_url(endpoint), timeout=export_timeout, session=_ErrorRecordingSession(state)
            )
            processor = _CountingBatchSpanProcessor(
                _RecordingExporter(exporter, state),
                state,
                max_queue_size=max_queue_size,
                max_export_batch_size=max_export_batch_size,
                schedule_delay_millis=schedule_delay_millis,
            )
            provider.add_span_processor(processor)
            processors.append(processor)
        _tracing = _Tracing(provider, processors, os.getpid())
        if not _exit_hook_registered:
            atexit.register(tracing_stop)  # a worker's normal exit (gunicorn: after its worker_exit hook)
            _exit_hook_registered = True
        if instrument:
            if not _global_provider_set:
                trace.set_tracer_provider(provider)
                _global_provider_set = True
            _instrument(provider)
        logger.info("tracing to %d OTLP endpoint(s): %s", len(endpoints), ", ".join(endpoints))
        return provider


def tracing_stop(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Send what is queued, waiting at most ``timeout`` seconds for all endpoints together (in parallel, so a
    hung collector costs that time once), then stop. Spans still queued for a collector that did not answer
    are lost. Instrumentation stays; spans ended afterwards are dropped."""
    global _tracing
    with _lock:
        tracing, _tracing = _tracing, None
    if tracing is None:
        return
    threads = [
        threading.Thread(target=processor.shutdown_within, args=(timeout,), daemon=True, name="bulwark-trace-stop")
        for processor in tracing.processors
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def tracing_health() -> dict[str, Any]:
    """Per endpoint: up (None before the first export), spans exported and dropped, the last error.

    ``{"running": False, "endpoints": []}`` when this process does not trace (not started, or no endpoint)."""
    tracing = _tracing
    if tracing is None or tracing.pid != os.getpid():
        return {"running": False, "endpoints": []}
    return {"running": True, "endpoints": [processor.state.as_dict() for processor in tracing.processors]}


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, or None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class TraceContextLogFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex; ``""`` outside a span) to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_trace_ids()
        record.trace_id, record.span_id = ids if ids else ("", "")
        return True


def log_filter_install(root: logging.Logger | None = None) -> int:
    """Attach :class:`TraceContextLogFilter` to every handler of the root logger that lacks one; returns how many
    it attached (a logging configuration that already lists the filter needs none)."""
    attached = 0
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(existing, TraceContextLogFilter) for existing in handler.filters):
            handler.addFilter(TraceContextLogFilter())
            attached += 1
    return attached
