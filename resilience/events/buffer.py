"""This process's events waiting for the primary, and the monitor task that writes them.

:func:`resilience.events.event_record` appends here and returns: nothing on the caller's path touches the
database. The node monitor runs :func:`events_flush` every second while the primary answers
(:func:`resilience.db.monitor.monitor_task_register`), which writes every waiting event in one ``bulk_create``.

- **Primary down**: the write raises a DatabaseError (``ReadOnlyModeError`` at once when this process knows, else
  a refused or timed-out connection); the events stay buffered, in order, for the next try. Read-only mode does
  not hold them back (the router lets the operators' own records through).
- **Bounded**: at most :data:`BUFFER_MAX` events wait (and as many again beside a write in flight); a full
  buffer drops the oldest, counted (``bulwark_resilience_events_dropped_total``) and logged once per outage.
- **Never written twice**: each event carries its own ``uid`` (unique in the table) and the insert skips a uid
  already stored, so a write cut off after its commit (``outcome_unknown``) and retried adds nothing.
- **A process without the monitor** (a management command such as ``rotate_jwt_key``) flushes once at exit.

Metrics: ``bulwark_resilience_events_total{kind}``, ``bulwark_resilience_events_dropped_total`` and
``bulwark_resilience_events_buffered`` (waiting in this process now).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connections
from prometheus_client import Counter, Gauge

logger = logging.getLogger("resilience.events")

BUFFER_MAX = 1000  # events waiting for the primary, per process (the oldest is dropped first)
SEVERITIES = ("info", "warning", "error")
PRIMARY = "default"  # resilience.db.nodes.PRIMARY (not imported: this module loads before the database layer)

EVENTS_TOTAL = Counter("bulwark_resilience_events_total", "Resilience events recorded by this process.", ["kind"])
EVENTS_DROPPED = Counter(
    "bulwark_resilience_events_dropped_total",
    "Resilience events dropped unwritten because the buffer waiting for the primary was full",
)
EVENTS_BUFFERED = Gauge(
    "bulwark_resilience_events_buffered",
    "Resilience events waiting for the primary (summed over live workers).",
    multiprocess_mode="livesum",
)


@dataclass(frozen=True)
class BufferedEvent:
    """One event as recorded: the fields of :class:`resilience.events.models.ResilienceEvent`."""

    at: datetime
    kind: str
    severity: str
    subject: str
    message: str
    detail: dict[str, Any]
    worker: str
    uid: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_dict(self, *, buffered: bool) -> dict[str, Any]:
        return {
            "uid": str(self.uid),
            "at": self.at,
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "detail": self.detail,
            "worker": self.worker,
            "buffered": buffered,
        }


class EventBuffer:
    """Thread-safe: appends never wait on a write (the lock is held for list operations only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._waiting: deque[BufferedEvent] = deque()
        # Taken out by the flush in progress: back to the front of the queue if its write fails.
        self._in_flight: list[BufferedEvent] = []
        self._dropped = 0
        self._drop_logged = False  # a drop since the last write has been logged already (once per outage)
        self._failing = False  # the last write failed (logged once, not every second)

    def append(self, event: BufferedEvent) -> None:
        with self._lock:
            self._waiting.append(event)
            dropped = self._trim()
            self._gauge()
        if dropped is not None:
            self._log_dropped(dropped)

    def pending(self) -> list[BufferedEvent]:
        """Every event not known to be written yet, oldest first (those being written included)."""
        with self._lock:
            return [*self._in_flight, *self._waiting]

    @property
    def dropped(self) -> int:
        return self._dropped

    def flush(self) -> int:
        """Write the waiting events to the primary in one insert; returns how many were written (0 when another
        flush is running, nothing waits, or the write failed: then the events wait for the next try)."""
        if not self._flush_lock.acquire(blocking=False):
            return 0
        try:
            with self._lock:
                batch = self._in_flight = list(self._waiting)
                self._waiting.clear()
            if not batch:
                return 0
            written = False
            try:
                _write(batch)
                written = True
            except DatabaseError as exc:
                if not self._failing:  # once per outage, not every second
                    logger.info("%d resilience event(s) not written yet: %s", len(batch), exc)
                self._failing = True
            finally:  # also on a bug (re-raised: the monitor logs it): nothing taken out is lost
                with self._lock:
                    self._in_flight = []
                    dropped = None
                    if written:
                        self._failing = self._drop_logged = False
                    else:
                        self._waiting.extendleft(reversed(batch))  # older than anything appended meanwhile
                        dropped = self._trim()
                    self._gauge()
                if dropped is not None:
                    self._log_dropped(dropped)
            return len(batch) if written else 0
        finally:
            self._flush_lock.release()

    def reset(self) -> None:
        """Forget every waiting event and the drop count (tests)."""
        with self._lock:
            self._waiting.clear()
            self._in_flight = []
            self._dropped = 0
            self._drop_logged = False
            self._failing = False
            self._gauge()

    def reinit_locks(self) -> None:
        """After a fork: a lock another thread of the parent held would never be released in the child."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def _trim(self) -> BufferedEvent | None:
        """Drop the oldest waiting events beyond the bound (caller holds the lock); the first one dropped when
        it is to be logged (the first drop since the last write), else None."""
        dropped = []
        while self._waiting and len(self._waiting) > max(BUFFER_MAX, 0):
            dropped.append(self._waiting.popleft())
        if not dropped:
            return None
        self._dropped += len(dropped)
        EVENTS_DROPPED.inc(len(dropped))
        if self._drop_logged:
            return None
        self._drop_logged = True
        return dropped[0]

    def _gauge(self) -> None:
        EVENTS_BUFFERED.set(len(self._waiting) + len(self._in_flight))

    @staticmethod
    def _log_dropped(oldest: BufferedEvent) -> None:
        logger.error(
            "resilience event buffer full (%d): dropped the oldest unwritten event (%s %s at %s); more drops until "
            "the primary is back are counted, not logged",
            BUFFER_MAX,
            oldest.kind,
            oldest.subject,
            oldest.at.isoformat(),
            extra={"event": "resilience_events_dropped", "kind": oldest.kind},
        )


def _write(batch: list[BufferedEvent]) -> None:
    from resilience.events.models import ResilienceEvent  # models load after the app registry

    rows = [
        ResilienceEvent(
            uid=event.uid,
            at=event.at,
            kind=event.kind,
            severity=event.severity,
            subject=event.subject,
            message=event.message,
            detail=event.detail,
            worker=event.worker,
        )
        for event in batch
    ]
    # Through the router, as any write: the primary, or ReadOnlyModeError (a DatabaseError) while it is down.
    # One INSERT (at most BUFFER_MAX rows): all written, or none.
    ResilienceEvent.objects.bulk_create(rows, ignore_conflicts=True)


def events_flush() -> int:
    """The node monitor's task while the primary is reachable: write this process's buffered events.

    Returns how many were written. On a database failure they stay buffered for the next try (nothing raised).
    """
    if not events_buffer.pending():
        return 0
    try:
        return events_buffer.flush()
    finally:
        primary = connections[PRIMARY]
        if not primary.in_atomic_block:  # the monitor's thread: no request end closes its connection
            primary.close()


def _flush_at_exit() -> None:
    """A process that never ran the monitor (a management command) writes its events once, as it exits."""
    from django.apps import apps
    from django.conf import settings

    if not apps.ready or not getattr(settings, "BULWARK_DB_MONITOR", False):
        return  # the test suite: no monitor, and its scratch databases are gone by now
    if events_buffer.pending():
        events_flush()


events_buffer = EventBuffer()
os.register_at_fork(after_in_child=events_buffer.reinit_locks)
atexit.register(_flush_at_exit)
