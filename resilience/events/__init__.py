"""A durable record of resilience events: failovers, nodes down and up, breaker trips, key rotations, operator
switches, rate limiting falling back to memory.

:func:`event_record` is called where the change happens and is logged (a request thread, a probe thread while the
primary is down, a breaker listener): it stamps the event with the moment and the worker that saw it, keeps it
in this process's bounded buffer and returns, never touching the database and never raising. The node monitor
writes the buffer to the primary every second while the primary answers (:mod:`resilience.events.buffer`); while
it is down the events wait, up to the buffer's bound (the oldest dropped and counted beyond it). The dashboard
reads them with :func:`resilience.events.selectors.events_recent`, the admin lists and searches them.

Importing this package loads no Django model (the emitters sit in modules the models import).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

from resilience.events.buffer import EVENTS_TOTAL, SEVERITIES, BufferedEvent, events_buffer, events_flush

__all__ = ["SEVERITIES", "event_record", "events_flush"]

logger = logging.getLogger("resilience.events")

# The model's column sizes: a longer value is cut here, so the batch insert never fails on one event.
KIND_MAX, SUBJECT_MAX, MESSAGE_MAX, WORKER_MAX = 64, 200, 1000, 200
DETAIL_MAX_CHARS = 10_000
_HOST = socket.gethostname()


def event_record(
    kind: str, *, message: str, subject: str = "", severity: str = "info", detail: dict | None = None
) -> None:
    """Record that ``kind`` happened now (to ``subject``): buffered in this process, written by the monitor."""
    try:
        if severity not in SEVERITIES:
            logger.warning("resilience event %s: unknown severity %r recorded as warning", kind, severity)
            severity = "warning"
        event = BufferedEvent(
            at=datetime.now(UTC),
            kind=_text(kind, KIND_MAX),
            severity=severity,
            subject=_text(subject, SUBJECT_MAX),
            message=_text(message, MESSAGE_MAX),
            detail=_json_safe(detail or {}),
            worker=_text(f"{_HOST}:{os.getpid()}", WORKER_MAX),  # the pid now: a forked worker has its own
        )
        events_buffer.append(event)
        EVENTS_TOTAL.labels(kind=event.kind).inc()
    except Exception:  # the caller is a failover path: an event must never break it (logged with the traceback)
        logger.exception("resilience event %r not recorded", kind)


def _text(value: object, limit: int) -> str:
    # PostgreSQL text cannot hold NUL: one such character would make the whole batch fail, on every try.
    return str(value).replace("\x00", "")[:limit]


def _json_safe(detail: dict[str, Any]) -> dict[str, Any]:
    """A copy that the JSON column takes: values it cannot hold become their text; oversized detail is cut."""
    try:
        encoded = json.dumps(detail, default=str, allow_nan=False)  # jsonb has no NaN
    except (TypeError, ValueError, RecursionError) as exc:  # a NaN, keys that are not strings, a cycle
        return {"unrecordable_detail": _text(f"{type(exc).__name__}: {exc}", 300)}
    if len(encoded) > DETAIL_MAX_CHARS:
        return {"truncated": encoded[:DETAIL_MAX_CHARS]}
    decoded = _without_nul(json.loads(encoded))
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def _without_nul(value: Any) -> Any:
    """jsonb refuses the NUL character too (``\\u0000``)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value
