"""Structured JSON logs through a bounded queue in each process: a request never waits on a disk.

``logging_config(config)`` builds ``LOGGING`` (Django's ``settings.LOGGING`` and gunicorn's ``logconfig_dict``:
one set-up for both). The root logger has one handler, ``BoundedQueueHandler``: its filters add the request
context (request id, user id) and redact secrets (``resilience.observability.redaction``), then it puts the
record on a bounded in-memory queue with ``put_nowait``. A full queue drops the record and counts it
(``bulwark_log_records_dropped_total``): logging never blocks the caller. One listener thread per process
takes records off the queue and writes them, as one JSON object a line, to the sinks:

- standard output, always;
- ``LOG_DIR/bulwark.log`` when ``LOG_DIR`` is set: concurrent-log-handler's ``ConcurrentTimedRotatingFileHandler``
  (a lock file serialises the writers, so every gunicorn worker can share the file), rotated at midnight UTC and
  at ``FILE_MAX_BYTES``, ``FILE_BACKUPS`` rotated files kept.

When a sink fails (disk full, directory unwritable or missing, stdout closed) the error is counted
(``bulwark_log_sink_errors_total{sink}``), a warning goes to stderr (at most once a minute per sink) and the
other sinks keep receiving records; a file sink that cannot be created at start is left out with the same
warning (it is not retried until logging is configured again). A sink that hangs holds only the listener: the
queue fills and records are dropped, counted. ``log_health()`` reports all of it for the ``logging`` health area.

Start and stop: the queue handler starts its listener when logging is configured (``dictConfig``, by Django or
by gunicorn's master) and stops it, flushing the queue, when it is closed (the next ``dictConfig``, or
``logging.shutdown`` at exit; ``log_listener_stop`` is also registered with ``atexit``). A fork never inherits a
running listener: ``os.register_at_fork`` stops it (flushing) before the fork and starts it again in the parent;
the child gets a fresh queue (the parent's pending records are the parent's to write) and its own listener.
gunicorn.conf.py's ``post_fork`` also calls ``log_listener_start()`` (a no-op when it is running).

``RequestLogMiddleware`` writes one ``request`` record per request (route, status, duration, the database
aliases its queries used and the fallbacks the routing took).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.utils.functional import LazyObject, empty
from prometheus_client import Counter, Gauge
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from core.request_id import RequestIdLogFilter
from resilience.observability.redaction import RedactionFilter, redact_text, redact_value, secrets_register
from resilience.serving.context import current_traffic_class

QUEUE_SIZE = 10_000
FILE_NAME = "bulwark.log"
FILE_MAX_BYTES = 50 * 1024 * 1024
FILE_BACKUPS = 14
STOP_TIMEOUT = 2.0  # seconds the listener is given to flush at stop (before a fork, at exit)
WARN_INTERVAL = 60.0  # a failing sink warns on stderr at most this often
DROP_WARN_WINDOW = 300.0  # the health area warns for drops this recent

RECORDS_DROPPED = Counter("bulwark_log_records_dropped", "Log records dropped because the log queue was full.")
QUEUE_DEPTH = Gauge(
    "bulwark_log_queue_depth", "Log records waiting for the listener thread.", multiprocess_mode="livemax"
)
SINK_ERRORS = Counter("bulwark_log_sink_errors", "Errors writing log records, by sink.", ["sink"])

_current_request: ContextVar[Any] = ContextVar("bulwark_log_request", default=None)


# --- configuration -------------------------------------------------------------------------------------------


def config_secrets(config: Any) -> list[str]:
    """The secret values a configuration holds (keys, database and Redis passwords, tokens)."""
    values = [config.secret_key, *config.secret_key_fallbacks, config.jwt_secret, config.jwt_secret_prev]
    values.append(getattr(config, "metrics_token", None))
    for database in (config.database, *config.replicas):
        values.append(database.get("PASSWORD"))
    if config.redis_url:
        values.append(urlsplit(config.redis_url).password)
    return [value for value in values if value]


def logging_config(config: Any | None) -> dict[str, Any]:
    """``LOGGING`` for Django and gunicorn: root → the bounded queue handler → stdout JSON (+ LOG_DIR file).

    Also registers the configuration's secret values with the redaction filter. ``config`` None (a broken
    environment, in gunicorn's master): INFO to stdout only. Building the dict touches no disk; an unusable
    ``LOG_DIR`` is reported (stderr) when the handler is created, and serving goes on.
    """
    if config is not None:
        secrets_register(config_secrets(config))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_context": {"()": "resilience.observability.logs.RequestContextFilter"},
            "redaction": {"()": "resilience.observability.redaction.RedactionFilter"},
        },
        "handlers": {
            "queue": {
                "()": "resilience.observability.logs.queue_handler",
                "filters": ["request_context", "redaction"],  # in this order: the context is redacted too
                "log_dir": config.log_dir if config is not None else None,
            },
        },
        "root": {"handlers": ["queue"], "level": config.log_level if config is not None else "INFO"},
        "loggers": {
            "django.server": {"level": "WARNING"},
            # django-health-check logs every failing check with a traceback, on every probe; the monitors log
            # each change of state once (resilience.db, resilience.cache, ...). Its errors (a crashed check) stay.
            "health_check": {"level": "ERROR"},
            # The OTLP exporter logs an ERROR for every failed batch (about one a second per worker while a collector
            # is down); the failures are counted (bulwark_spans_dropped_total) and shown by /health's telemetry area.
            "opentelemetry.exporter.otlp.proto.http.trace_exporter": {"level": "CRITICAL"},
            # gunicorn's own loggers: no handlers of their own (gunicorn's are removed), through the root's queue.
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }


# --- formatting and filters ----------------------------------------------------------------------------------


class JsonLogFormatter(JsonFormatter):
    """One JSON object a line: timestamp, level, logger, message, process, and every ``extra`` field."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(process)d",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            timestamp="timestamp",
            reserved_attrs=[*RESERVED_ATTRS, "_bulwark_redacted"],
            json_encoder=_Encoder,
        )

    def formatException(self, ei: Any) -> str:
        return redact_text(super().formatException(ei))


class _Encoder(JsonEncoder):
    """python-json-logger's encoder (datetimes as ISO 8601, other objects as text), sets as lists, text redacted."""

    def default(self, o: Any) -> Any:
        if isinstance(o, set | frozenset):
            return sorted(str(item) for item in o)
        encoded = super().default(o)
        return redact_text(encoded) if isinstance(encoded, str) else encoded


class RequestContextFilter(RequestIdLogFilter):
    """Adds ``request_id`` (``-`` outside a request), ``user_id`` (None unless a user is known) and
    ``traffic_class`` (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if not hasattr(record, "traffic_class"):
            record.traffic_class = current_traffic_class.get()
        if not hasattr(record, "user_id"):
            record.user_id = _user_id(getattr(record, "request", None) or _current_request.get())
        return True


def _user_id(request: Any) -> Any:
    """The authenticated user's id, only if already loaded (never a query from inside logging)."""
    if request is None:
        return None
    request = getattr(request, "_request", request)  # a DRF Request wraps Django's
    user = getattr(request, "__dict__", {}).get("user")
    if isinstance(user, LazyObject):  # AuthenticationMiddleware's SimpleLazyObject
        user = user.__dict__.get("_wrapped", empty)
    if user is None or user is empty:  # not loaded yet
        return None
    wrapped = user
    return getattr(wrapped, "pk", None) if getattr(wrapped, "is_authenticated", False) else None


# --- sinks ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SinkStatus:
    name: str
    target: str
    available: bool = True  # False: could not be created (LOG_DIR unusable)
    failing: bool = False  # the last write failed
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    warned_at: float = 0.0


class _Sink:
    """Mixin: a write error is counted, remembered and warned about on stderr; the next record is tried again."""

    sink_status: SinkStatus

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)  # type: ignore[misc]
        if not self._failed_now:
            self.sink_status.failing = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_now = True
        error = sys.exc_info()[1]
        sink_failed(self.sink_status, f"{type(error).__name__}: {error}" if error else "write failed")


class StdoutSink(_Sink, logging.StreamHandler):  # type: ignore[type-arg]
    pass


def _file_sink_class() -> type[logging.Handler]:
    from concurrent_log_handler import ConcurrentTimedRotatingFileHandler

    class RotatingFileSink(_Sink, ConcurrentTimedRotatingFileHandler):
        pass

    return RotatingFileSink


def _stderr_warning(text: str) -> None:
    stream = sys.stderr or sys.__stderr__
    if stream is None:
        return
    # stderr itself unwritable: nothing is left to tell, and logging must not raise into the caller.
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"bulwark logging: {text}\n")
        stream.flush()


def sink_failed(status: SinkStatus, error: str) -> None:
    """Count and remember a sink error; warn on stderr at most once a ``WARN_INTERVAL``."""
    status.failing = True
    status.errors += 1
    status.last_error = error
    status.last_error_at = time.time()
    SINK_ERRORS.labels(sink=status.name).inc()
    _state.last_sink_error = f"{status.name}: {error}"
    now = time.monotonic()
    if now - status.warned_at >= WARN_INTERVAL or not status.warned_at:
        status.warned_at = now
        others = [s.name for s in _state.sink_statuses() if s is not status and s.available and not s.failing]
        still = f"records still go to {', '.join(others)}" if others else "no other sink is writable"
        _stderr_warning(f"cannot write to the {status.name} sink ({status.target}): {error}; {still}")


def _build_file_sink(
    log_dir: str, formatter: logging.Formatter, *, max_bytes: int, backups: int
) -> tuple[logging.Handler | None, SinkStatus]:
    path = Path(log_dir) / FILE_NAME
    status = SinkStatus("file", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):  # fail now, not on the first record
            pass
        handler = _file_sink_class()(
            str(path),
            when="midnight",
            utc=True,
            backupCount=backups,
            maxBytes=max_bytes,
            encoding="utf-8",
        )
    except OSError as exc:
        status.available = False
        sink_failed(status, f"{type(exc).__name__}: {exc}")
        return None, status
    handler.sink_status = status  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    return handler, status


# --- the queue and its listener ------------------------------------------------------------------------------


class BoundedQueueHandler(logging.handlers.QueueHandler):
    """Puts records on a bounded queue without ever blocking: a full queue drops the record and counts it."""

    def __init__(self, log_queue: queue.Queue, sinks: list[logging.Handler], statuses: list[SinkStatus]) -> None:
        super().__init__(log_queue)
        self.sinks = sinks
        self.statuses = statuses

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            record_dropped()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy that the listener can write later: message and exception as (redacted) text, extras kept."""
        record = copy.copy(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        record.message = record.getMessage()
        record.msg, record.args, record.exc_info = record.message, None, None
        for key, value in list(record.__dict__.items()):  # objects as text now: the listener runs later
            if key not in _STANDARD and not isinstance(value, str | int | float | bool | type(None)):
                record.__dict__[key] = redact_value(value)
        return record

    def close(self) -> None:
        """Closed by the next ``dictConfig`` or at exit: the listener writes what is queued, then stops."""
        if _state.handler is self:
            log_listener_stop()
        super().close()


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class _Listener(logging.handlers.QueueListener):
    """QueueListener that survives a failing sink and is stopped with a deadline (a full queue, a hung sink)."""

    def handle(self, record: logging.LogRecord) -> None:
        for handler in self.handlers:
            try:
                handler.handle(record)
            except Exception as exc:  # noqa: BLE001 - a sink bug must not kill the thread that serves every sink
                status = getattr(handler, "sink_status", None)
                if status is not None:
                    sink_failed(status, f"{type(exc).__name__}: {exc}")
        QUEUE_DEPTH.set(self.queue.qsize())

    def stop_within(self, timeout: float) -> bool:
        """Flush and stop; False when the listener could not finish in time (it is left to run, a daemon)."""
        thread = self._thread
        if thread is None:
            return True
        try:
            self.queue.put(self._sentinel, timeout=timeout)
        except queue.Full:
            return False
        thread.join(timeout)
        self._thread = None
        return not thread.is_alive()


@dataclasses.dataclass
class _LogState:
    handler: BoundedQueueHandler | None = None
    listener: _Listener | None = None
    dropped: int = 0
    last_drop_at: float | None = None
    last_sink_error: str | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    resume_after_fork: bool = False

    def sink_statuses(self) -> list[SinkStatus]:
        return list(self.handler.statuses) if self.handler else []


_state = _LogState()
_stream_name = "stdout"  # management commands log to stderr: their stdout is their output (``--json``)


def log_to_stderr() -> None:
    """Send this process's log records to standard error instead of standard output (manage.py, before the
    settings load: a command's stdout is its output, e.g. ``spof_report --json``)."""
    global _stream_name
    _stream_name = "stderr"


def log_history_forget() -> None:
    """Forget past drops and sink errors (a test that needs a logging area with no history)."""
    _state.dropped, _state.last_drop_at, _state.last_sink_error = 0, None, None


def record_dropped() -> None:
    _state.dropped += 1
    _state.last_drop_at = time.time()
    RECORDS_DROPPED.inc()


def queue_handler(
    *,
    log_dir: str | None = None,
    queue_size: int = QUEUE_SIZE,
    stream: Any = None,
    max_bytes: int = FILE_MAX_BYTES,
    backups: int = FILE_BACKUPS,
) -> logging.Handler:
    """The root's handler (``dictConfig`` factory): builds the sinks and starts this process's listener.

    An unusable ``log_dir`` leaves the file sink out with a stderr warning; stdout is always a sink.
    """
    formatter = JsonLogFormatter()
    stdout = StdoutSink(stream if stream is not None else getattr(sys, _stream_name))
    stdout.sink_status = SinkStatus("stdout", "standard output" if _stream_name == "stdout" else "standard error")
    stdout.setFormatter(formatter)
    sinks: list[logging.Handler] = [stdout]
    statuses = [stdout.sink_status]
    if log_dir:
        file_sink, status = _build_file_sink(log_dir, formatter, max_bytes=max_bytes, backups=backups)
        statuses.append(status)
        if file_sink is not None:
            sinks.append(file_sink)
    handler = BoundedQueueHandler(queue.Queue(maxsize=queue_size), sinks, statuses)
    with _state.lock:
        previous = _state.handler
        _state.handler = handler
    if previous is not None and _state.listener is not None and _state.listener.queue is previous.queue:
        _stop_listener()
    log_listener_start()
    return handler


def log_listener_start() -> None:
    """Start this process's listener for the current queue handler (no-op when it runs; safe to call again)."""
    with _state.lock:
        handler = _state.handler
        if handler is None:
            return
        listener = _state.listener
        if listener is not None and listener._thread is not None and listener.queue is handler.queue:
            return
        _state.listener = _Listener(handler.queue, *handler.sinks, respect_handler_level=False)
        _state.listener.start()


def _stop_listener() -> bool:
    with _state.lock:
        listener, _state.listener = _state.listener, None
    if listener is None:
        return True
    flushed = listener.stop_within(STOP_TIMEOUT)
    if not flushed:
        _stderr_warning(f"the log listener did not flush within {STOP_TIMEOUT:.0f}s (a sink hangs)")
    return flushed


def log_listener_stop() -> None:
    """Write what is queued (at most ``STOP_TIMEOUT`` seconds: a hung sink is left behind) and stop."""
    _stop_listener()
    for handler in _state.handler.sinks if _state.handler else []:
        with contextlib.suppress(OSError, ValueError):  # flushing a broken sink: already counted and warned
            handler.flush()


def _before_fork() -> None:
    _state.resume_after_fork = _state.listener is not None and _state.listener._thread is not None
    if _state.resume_after_fork:
        _stop_listener()


def _after_fork_in_parent() -> None:
    if _state.resume_after_fork:
        log_listener_start()


def _after_fork_in_child() -> None:
    _state.lock = threading.Lock()
    _state.listener = None  # the parent's thread does not exist here
    _state.dropped, _state.last_drop_at = 0, None
    if _state.handler is not None:
        _state.handler.queue = queue.Queue(maxsize=_state.handler.queue.maxsize)  # the parent's records are its own
        log_listener_start()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
atexit.register(log_listener_stop)


# --- health --------------------------------------------------------------------------------------------------


def _writable(status: SinkStatus) -> bool:
    if not status.available or status.failing:
        return False
    if status.name == "file":
        return os.access(status.target, os.W_OK) and os.access(os.path.dirname(status.target), os.W_OK)
    return True


def log_health() -> dict[str, Any]:
    """What the ``logging`` health area reads: each sink writable, queue depth, drops since start, last error."""
    handler, listener = _state.handler, _state.listener
    depth = handler.queue.qsize() if handler else 0
    QUEUE_DEPTH.set(depth)
    now = time.time()
    return {
        "configured": handler is not None,
        "listener_running": bool(listener and listener._thread and listener._thread.is_alive()),
        "queue_depth": depth,
        "queue_capacity": handler.queue.maxsize if handler else 0,
        "dropped": _state.dropped,
        "dropping": _state.last_drop_at is not None and now - _state.last_drop_at < DROP_WARN_WINDOW,
        "sinks": {
            status.name: {
                "target": status.target,
                "writable": _writable(status),
                "errors": status.errors,
                "last_error": status.last_error,
            }
            for status in _state.sink_statuses()
        },
        "last_sink_error": _state.last_sink_error,
    }


# --- the per-request record ----------------------------------------------------------------------------------

request_logger = logging.getLogger("bulwark.request")


class _AliasRecorder:
    def __init__(self, alias: str, used: set[str]) -> None:
        self.alias, self.used = alias, used

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.used.add(self.alias)
        return execute(sql, params, many, context)


@contextlib.contextmanager
def _aliases_used(used: set[str]) -> Iterator[None]:
    from django.db import connections

    with contextlib.ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(_AliasRecorder(alias, used)))
        yield


def _fallbacks(state: Any) -> list[str]:
    if state is None:
        return []
    taken = [f"failed:{alias}" for alias in sorted(state.failed)]
    taken += [name for name, on in (("retried", state.retried), ("stale_replica", state.stale)) if on]
    taken += ["outcome_unknown"] if state.outcome_unknown else []
    return taken


class RequestLogMiddleware:
    """One ``request`` record per request (after it ends): method, path, route, status, duration, user id, the
    database aliases its queries used and the routing fallbacks it took. Goes between RequestIdMiddleware and
    DatabaseRoutingMiddleware (it reads the routing state that middleware leaves on the request)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        token = _current_request.set(request)
        started = time.perf_counter()
        used: set[str] = set()
        response = None
        try:
            with _aliases_used(used):
                response = self.get_response(request)
            return response
        finally:
            self._log(request, response, used, time.perf_counter() - started)
            _current_request.reset(token)

    @staticmethod
    def _log(request: Any, response: Any, used: set[str], seconds: float) -> None:
        status = getattr(response, "status_code", 500)
        if response is not None:
            # This record is the request's line: django.request would log every 4xx/5xx answer a second time
            # (an unhandled exception's traceback is logged before this, and still is).
            response._has_been_logged = True
        match = getattr(request, "resolver_match", None)
        request_logger.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            seconds * 1000,
            extra={
                "event": "request",
                "method": request.method,
                "path": request.path,
                "route": getattr(match, "route", None),
                "view": getattr(match, "view_name", None),
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "db_aliases": sorted(used),
                "db_fallbacks": _fallbacks(getattr(request, "_db_routing", None)),
                "user_id": _user_id(request),
            },
        )


__all__ = [
    "BoundedQueueHandler",
    "JsonLogFormatter",
    "RedactionFilter",
    "RequestContextFilter",
    "RequestLogMiddleware",
    "log_health",
    "log_listener_start",
    "log_listener_stop",
    "logging_config",
    "queue_handler",
]
