"""Structured logs (resilience/observability/logs.py) and redaction (redaction.py): the JSON fields, the bounded
queue that drops instead of blocking, the LOG_DIR file shared by two processes, sink failures, the health area."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client import REGISTRY

from resilience.observability import logs
from resilience.observability.health import LoggingHealth, logging_status
from resilience.observability.redaction import REDACTED, redact_record, redact_text

ROOT = Path(__file__).resolve().parents[3]


def dropped_total() -> float:
    return REGISTRY.get_sample_value("bulwark_log_records_dropped_total") or 0.0


def sink_errors(sink: str) -> float:
    return REGISTRY.get_sample_value("bulwark_log_sink_errors_total", {"sink": sink}) or 0.0


@pytest.fixture
def own_logging() -> Iterator[None]:
    """The test's queue handler replaces the process's; the settings' one (and its listener) comes back after."""
    saved = logs._state.handler
    yield
    logs.log_listener_stop()
    with logs._state.lock:
        logs._state.handler = saved
    logs.log_listener_start()


def logger_to(handler: logging.Handler, name: str = "tests.logs") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_records_are_json_with_the_standard_fields_the_event_and_every_extra(own_logging) -> None:
    stream = io.StringIO()
    handler = logs.queue_handler(stream=stream)
    handler.addFilter(logs.RequestContextFilter())
    log = logger_to(handler)
    log.info("order %s placed", 42, extra={"event": "order_placed", "order": {"id": 42}, "failed": {"replica_1"}})
    try:
        raise RuntimeError("gateway said no")
    except RuntimeError:
        log.exception("charge failed", extra={"event": "charge_failed"})
    logs.log_listener_stop()
    first, second = json_lines(stream.getvalue())
    assert {"timestamp", "level", "logger", "message", "request_id", "user_id", "process"} <= set(first)
    assert first["message"] == "order 42 placed" and first["level"] == "INFO" and first["logger"] == "tests.logs"
    assert first["event"] == "order_placed" and first["order"] == {"id": 42} and first["failed"] == ["replica_1"]
    assert first["request_id"] == "-" and first["user_id"] is None
    assert first["timestamp"].endswith("+00:00")
    assert second["event"] == "charge_failed" and "RuntimeError: gateway said no" in second["exception"]
    assert "Traceback" in second["exception"]


def test_settings_route_the_root_logger_through_the_bounded_queue() -> None:
    root = logging.getLogger()
    assert [type(h) for h in root.handlers if isinstance(h, logs.BoundedQueueHandler)] == [logs.BoundedQueueHandler]
    assert logs.log_health()["listener_running"]
    assert settings.LOGGING["loggers"]["django.server"]["level"] == "WARNING"
    assert settings.LOGGING["loggers"]["health_check"]["level"] == "ERROR"


@pytest.mark.django_db
def test_each_request_ends_with_one_request_record_with_route_status_duration_and_database(
    auth_client, user, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bulwark.request")
    response = auth_client.get("/api/cart/", HTTP_X_REQUEST_ID="rid-logs-1")
    assert response.status_code == 200
    records = [r for r in caplog.records if r.name == "bulwark.request"]
    assert len(records) == 1
    record = records[0]
    assert record.event == "request" and record.status == 200 and record.method == "GET"
    assert record.route == "api/cart/" and record.path == "/api/cart/"
    assert record.request_id == "rid-logs-1" and record.user_id == user.pk
    assert record.duration_ms >= 0 and record.db_aliases == ["default"] and record.db_fallbacks == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status", "level"),
    [("/api/products/987654321/", 404, logging.INFO), ("/api/cart/", 504, logging.ERROR)],
)
def test_an_error_answer_is_logged_once_not_again_by_django_request(auth_client, caplog, path, status, level) -> None:
    from resilience.serving.budget import budget_end, budget_start

    caplog.set_level(logging.INFO)
    token = budget_start(0.0 if status == 504 else 30.0, "checkout")  # a spent budget: the first statement is refused
    try:
        response = auth_client.get(path)
    finally:
        budget_end(token)
    assert response.status_code == status
    lines = [r for r in caplog.records if r.name in ("bulwark.request", "django.request")]
    assert [(r.name, r.levelno, r.status) for r in lines] == [("bulwark.request", level, status)]


class BlockingStream:
    """A sink that hangs (a disk that stopped answering) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(30)
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_full_queue_drops_and_counts_records_and_never_blocks_the_caller(own_logging) -> None:
    stream = BlockingStream()
    handler = logs.queue_handler(stream=stream, queue_size=5)
    log = logger_to(handler)
    before, dropped_before = dropped_total(), logs._state.dropped
    log.info("first")  # the listener takes it and hangs in the sink
    assert stream.entered.wait(5)
    started = time.monotonic()
    for number in range(50):
        log.info("record %d", number)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed  # a blocking put would wait 30 s on the first record past the queue's size
    assert logs._state.dropped - dropped_before == 45  # 5 wait in the queue
    assert dropped_total() - before == 45
    health = logs.log_health()
    assert health["dropping"] and health["queue_depth"] == 5
    assert logging_status(LoggingHealth()).status == "warn"
    stream.release.set()
    logs.log_listener_stop()
    assert len(stream.written) == 6


@pytest.mark.django_db
def test_a_request_returns_at_once_while_the_log_sink_hangs(client, own_logging) -> None:
    stream = BlockingStream()
    handler = logs.queue_handler(stream=stream, queue_size=2)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        logging.getLogger("tests.logs.hang").warning("fill the sink")
        assert stream.entered.wait(5)
        started = time.monotonic()
        for _ in range(5):
            assert client.get("/health/live").status_code == 200  # each logs its request record
        elapsed = time.monotonic() - started
    finally:
        root.handlers[:] = saved
        stream.release.set()
    assert elapsed < 5, elapsed
    assert logs._state.dropped >= 3


WRITER = """
import logging, sys
from resilience.observability import logs
handler = logs.queue_handler(log_dir=sys.argv[1], max_bytes=20_000, backups=200, stream=open("/dev/null", "w"))
log = logging.getLogger("writer")
log.addHandler(handler)
log.setLevel(logging.INFO)
for number in range(int(sys.argv[3])):
    log.info("record %d from %s", number, sys.argv[2], extra={"event": "bulk", "writer": sys.argv[2], "n": number,
             "padding": "x" * 200})
logs.log_listener_stop()
"""


def test_two_processes_share_the_rotating_file_without_losing_or_mixing_lines(tmp_path: Path) -> None:
    count = 400
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(count)], cwd=ROOT, env=env)
        for name in ("a", "b")
    ]
    assert [writer.wait(60) for writer in writers] == [0, 0]
    files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("bulwark.log"))
    assert len(files) > 2  # rotated by size (20 kB) several times
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for path in files:
        for line in path.read_text().splitlines():
            record = json.loads(line)  # a torn or interleaved line would not parse
            assert record["event"] == "bulk"
            assert record["n"] not in seen[record["writer"]]
            seen[record["writer"]].add(record["n"])
    assert seen == {"a": set(range(count)), "b": set(range(count))}


def test_an_unusable_log_dir_warns_on_stderr_and_stdout_keeps_logging(tmp_path, monkeypatch, own_logging) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    stderr, stdout = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    handler = logs.queue_handler(log_dir=str(blocker / "logs"), stream=stdout)
    logger_to(handler).warning("still served")
    logs.log_listener_stop()
    assert "cannot write to the file sink" in stderr.getvalue() and "records still go to stdout" in stderr.getvalue()
    assert json_lines(stdout.getvalue())[0]["message"] == "still served"
    sinks = logs.log_health()["sinks"]
    assert sinks["stdout"]["writable"] and not sinks["file"]["writable"]
    assert "NotADirectoryError" in sinks["file"]["last_error"]


def test_a_full_disk_is_counted_and_warned_and_the_other_sink_still_gets_records(
    tmp_path, monkeypatch, own_logging
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    full = open("/dev/full", "w")  # every write: ENOSPC, as a full disk
    before = sink_errors("stdout")
    handler = logs.queue_handler(log_dir=str(tmp_path), stream=full)
    log = logger_to(handler)
    log.error("one")
    log.error("two")
    logs.log_listener_stop()
    assert sink_errors("stdout") - before == 2
    assert "cannot write to the stdout sink" in stderr.getvalue() and "No space left" in stderr.getvalue()
    assert stderr.getvalue().count("cannot write") == 1  # warned once, not per record
    lines = json_lines((tmp_path / "bulwark.log").read_text())
    assert [line["message"] for line in lines] == ["one", "two"]
    health = logs.log_health()
    assert not health["sinks"]["stdout"]["writable"] and health["sinks"]["file"]["writable"]
    assert "No space left" in health["last_sink_error"]
    logs.log_listener_start()
    assert logging_status(LoggingHealth()).status == "warn"


def test_no_writable_sink_fails_the_logging_area(monkeypatch, own_logging) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    handler = logs.queue_handler(stream=open("/dev/full", "w"))
    logger_to(handler).error("lost")
    logs.log_listener_stop()
    logs.log_listener_start()
    status = logging_status(LoggingHealth())
    assert status.status == "fail"
    assert any(c.measurement == "writable" and c.status == "fail" for c in status.components)


def test_the_logging_area_passes_with_the_settings_logging() -> None:
    status = logging_status(LoggingHealth())
    assert {c.measurement for c in status.components} >= {"writable", "queue_depth", "dropped", "listener"}
    assert all(c.status == "pass" for c in status.components if c.measurement != "dropped"), status.components


def test_a_forked_child_gets_its_own_queue_and_listener(tmp_path, own_logging) -> None:
    handler = logs.queue_handler(log_dir=str(tmp_path), stream=open(os.devnull, "w"))
    log = logger_to(handler)
    parent_queue = handler.queue
    pid = os.fork()
    if pid == 0:  # the child: a fresh queue, a running listener, its record written; never back into pytest
        code = 2
        try:
            ok = handler.queue is not parent_queue and logs.log_health()["listener_running"]
            log.info("from the child")
            logs.log_listener_stop()
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("from the parent")  # the parent's listener runs again after the fork
    logs.log_listener_stop()
    messages = [line["message"] for line in json_lines((tmp_path / "bulwark.log").read_text())]
    assert sorted(messages) == ["from the child", "from the parent"]


# ---- redaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefghijkl.mnop", "abcdefghijkl"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl refused", "eyJhbGciOiJIUzI1NiJ9"),
        ('{"username": "ada", "password": "correct horse"}', "correct horse"),
        ("username=ada&password=hunter22&next=/", "hunter22"),
        ("<QueryDict: {'password': ['hunter22']}>", "hunter22"),
        ("Cookie: sessionid=s3ss10n; csrftoken=c5rf", "s3ss10n"),
        ("set sessionid=s3ss10nvalue; Path=/", "s3ss10nvalue"),
        ("paid with 4111 1111 1111 1111 today", "4111 1111 1111 1111"),
        ("paid with 5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("card=378282246310005", "378282246310005"),
    ],
)
def test_secret_patterns_are_redacted(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted and REDACTED in redacted


@pytest.mark.parametrize(
    "text", ["order 4111111111111112 (not Luhn-valid)", "request id 4d2c1f0e9b8a7c6d", "the password validators said"]
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_the_configuration_secrets_are_redacted_wherever_they_appear() -> None:
    config = settings.BULWARK_CONFIG
    values = logs.config_secrets(config)
    assert config.secret_key in values and config.jwt_secret in values
    for value in values:
        assert value not in redact_text(f"leaked: {value}!")


def test_a_record_is_redacted_in_message_args_extras_and_exception_text() -> None:
    try:
        raise ValueError(f"bad key {settings.SECRET_KEY}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "login %(username)s %(password)s", None, exc_info)
    record.args = {"username": "ada", "password": "pa55word-xyz"}
    record.headers = {"Authorization": "Bearer abcdefghijkl", "Accept": "application/json"}
    record.api_token = "tok-123456"
    record.detail = ["refresh eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "pa55word-xyz again"]
    redact_record(record)
    # exc_info stays for handlers that inspect the exception; formatters use the redacted exc_text (the queue
    # handler drops exc_info: test_a_record_through_the_queue_handler_reaches_the_sink_redacted).
    fields = {key: value for key, value in record.__dict__.items() if key != "exc_info"}
    text = record.getMessage() + repr(fields) + logging.Formatter().format(record)
    for secret in ("pa55word-xyz", "abcdefghijkl", "tok-123456", "eyJhbGciOiJIUzI1NiJ9", settings.SECRET_KEY):
        assert secret not in text, secret
    assert record.getMessage() == f"login ada {REDACTED}"
    assert record.headers == {"Authorization": REDACTED, "Accept": "application/json"}
    assert "ValueError: bad key" in record.exc_text


def test_a_record_through_the_queue_handler_reaches_the_sink_redacted(own_logging) -> None:
    stream = io.StringIO()
    handler = logs.queue_handler(stream=stream)
    handler.addFilter(logs.RedactionFilter())
    log = logger_to(handler)
    try:
        raise PermissionError(f"JWT_SECRET={settings.BULWARK_CONFIG.jwt_secret}")
    except PermissionError:
        log.exception("signing failed", extra={"cookies": {"sessionid": "abcdef123"}, "password": "pw-123456"})
    logs.log_listener_stop()
    output = stream.getvalue()
    for secret in (settings.BULWARK_CONFIG.jwt_secret, "abcdef123", "pw-123456"):
        assert secret not in output
    assert json_lines(output)[0]["message"] == "signing failed"


def test_logging_never_waits_for_the_queue_lock_of_a_full_queue() -> None:
    handler = logs.BoundedQueueHandler(queue.Queue(maxsize=1), [], [])
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "x", None, None)
    handler.emit(record)
    before = logs._state.dropped
    started = time.monotonic()
    handler.emit(record)
    assert time.monotonic() - started < 0.5 and logs._state.dropped == before + 1


def test_redaction_of_a_huge_line_is_linear_not_quadratic() -> None:
    """A 1 MB request line in the access log (gunicorn lets up to 1 MiB through) must not hold the worker: the
    key=value pattern once took 21 s on 20 KB of letters. A wide bound: a linear scan takes well under 0.1 s."""
    from resilience.observability.redaction import redact_text

    line = '127.0.0.1 "GET /api/products/?q=' + "a" * 1_000_000 + ' HTTP/1.1" 414 143 5ms'
    started = time.monotonic()
    assert redact_text(line) == line
    assert time.monotonic() - started < 5
    assert redact_text("q=" + "a" * 30 + "password=hunter2") == "q=" + "a" * 30 + "password=[REDACTED]"
