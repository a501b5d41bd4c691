"""Shared by the tests: the error envelope and its invariants; real node failures (a port where nothing listens);
waiting for a condition (``poll``) rather than for a fixed time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

from django.db import connection, connections

T = TypeVar("T")
ENVELOPE_KEYS = {"code", "message", "detail", "request_id"}
# The eight areas of /health and validate_env, as DESIGN.md names them (a contract: not imported from the code).
HEALTH_AREAS = [
    "database",
    "authentication",
    "configuration",
    "logging",
    "telemetry",
    "serving",
    "rateLimit",
    "circuitBreakers",
]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the documented error envelope with this status and code; returns ``error``."""
    assert response.status_code == status, (response.status_code, response.content[:1000])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["request_id"], error
    assert error["request_id"] == response["X-Request-ID"]
    assert "Traceback" not in response.content.decode()
    return error


def assert_validation_error(response: Any, *fields: str) -> dict[str, Any]:
    """A 400 ``validation_error`` whose detail names each of ``fields`` with at least one message."""
    error = assert_error(response, 400, "validation_error")
    detail = error["detail"]
    assert isinstance(detail, dict), detail
    for field in fields:
        assert field in detail, (field, detail)
        assert isinstance(detail[field], list) and detail[field], detail
        assert all(isinstance(message, str) and message for message in detail[field]), detail
    return error


BARRIER_TIMEOUT = 60
JOIN_TIMEOUT = 90


def run_together(workers: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run each worker in its own thread, released together; ("ok", result) or ("error", exception) each."""
    barrier = threading.Barrier(len(workers), timeout=BARRIER_TIMEOUT)
    outcomes: list[tuple[str, Any] | None] = [None] * len(workers)

    def run(index: int, work: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            outcomes[index] = ("ok", work())
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported to the test
            outcomes[index] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, work), daemon=True) for i, work in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a worker hung (deadlock?)"
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


@contextmanager
def dead(*aliases: str) -> Iterator[None]:
    """These database aliases point at a port where nothing listens: connecting is refused, as with a killed server."""
    from tests.system.conftest import free_port

    with ExitStack() as stack:
        for alias in aliases:
            node = connections[alias]
            node.close()
            original = node.settings_dict["PORT"]
            node.settings_dict["PORT"] = str(free_port())
            stack.callback(node.settings_dict.__setitem__, "PORT", original)
            stack.callback(node.close)
        yield


def poll(check: Callable[[], T], timeout: float, interval: float = 0.25) -> tuple[T, float]:
    """Call ``check`` until it returns something truthy; returns (result, seconds taken). Raises on timeout."""
    started = time.monotonic()
    while True:
        result = check()
        waited = time.monotonic() - started
        if result:
            return result, waited
        if waited >= timeout:
            raise AssertionError(f"not reached within {timeout:.0f} s (last result: {result!r})")
        time.sleep(interval)


def fresh_logging() -> None:
    """Logging configured anew (its stdout sink on this test's captured stream) with no past drops or sink errors:
    the ``logging`` health area passes unless the test itself breaks it."""
    import logging.config

    from django.conf import settings

    from resilience.observability.logs import log_history_forget

    logging.config.dictConfig(settings.LOGGING)
    log_history_forget()
