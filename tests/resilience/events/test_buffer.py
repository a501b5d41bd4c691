"""event_record buffers in the process and never touches the database; events_flush writes the buffer to the
primary once, keeps it when the primary is down (a real dead node: tests.helpers.dead) and the bound drops the
oldest, counted."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connections
from prometheus_client import REGISTRY

from resilience.controls.state import READ_ONLY, controls_replace
from resilience.db.monitor import NodeMonitor
from resilience.db.nodes import PRIMARY, registry
from resilience.events import buffer, event_record, events_flush
from resilience.events.buffer import events_buffer
from resilience.events.models import ResilienceEvent
from tests.helpers import dead, run_together
from tests.resilience.events.conftest import buffered

REPLICA = "replica_1"
KIND = "test_event"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),  # dead() closes connections
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _stored(**filters: object) -> list[ResilienceEvent]:
    return list(ResilienceEvent.objects.using(PRIMARY).filter(**filters).order_by("at", "id"))


def _primary_back() -> None:
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_an_event_is_buffered_with_its_moment_and_worker_and_no_database_is_touched() -> None:
    connections.close_all()
    before = datetime.now(UTC)
    event_record(KIND, message="Something changed", subject="node-x", severity="warning", detail={"n": 1})
    after = datetime.now(UTC)
    assert all(connections[alias].connection is None for alias in connections), "a connection was opened"
    [event] = buffered(KIND)
    assert before <= event.at <= after
    assert (event.subject, event.severity, event.message, event.detail) == (
        "node-x",
        "warning",
        "Something changed",
        {"n": 1},
    )
    assert event.worker == f"{socket.gethostname()}:{os.getpid()}"
    assert not ResilienceEvent.objects.using(PRIMARY).exists()


def test_a_flush_writes_the_buffer_to_the_primary_once_with_the_moment_it_happened() -> None:
    event_record(KIND, message="first", subject="a")
    event_record(KIND, message="second", subject="b")
    recorded = buffered(KIND)
    time.sleep(0.02)  # the flush comes later than the events
    flushed_at = datetime.now(UTC)
    assert events_flush() == 2
    rows = _stored(kind=KIND)
    assert [(row.message, row.subject) for row in rows] == [("first", "a"), ("second", "b")]
    assert [row.at for row in rows] == [event.at for event in recorded]  # not the time of the write
    assert all(row.at < flushed_at for row in rows)
    assert [row.uid for row in rows] == [event.uid for event in recorded]
    assert events_buffer.pending() == []
    assert events_flush() == 0  # nothing twice
    assert len(_stored(kind=KIND)) == 2


def test_an_event_written_before_is_not_stored_again() -> None:
    """A flush whose commit was cut off (outcome unknown) keeps its events: the retry must not duplicate them."""
    event_record(KIND, message="once")
    [event] = buffered(KIND)
    assert events_flush() == 1
    events_buffer.append(event)  # as if that write had raised after its commit
    events_buffer.append(replace(event, uid=uuid.uuid4(), message="another"))
    assert events_flush() == 2
    assert [row.message for row in _stored(kind=KIND)] == ["once", "another"]


def test_with_the_primary_down_the_events_wait_and_are_written_when_it_is_back() -> None:
    event_record(KIND, message="first")
    event_record(KIND, message="second")
    with dead(PRIMARY):
        assert events_flush() == 0  # no exception either
        event_record(KIND, message="during")
    assert [event.message for event in buffered(KIND)] == ["first", "second", "during"]  # kept, in order
    assert not registry().primary_available()  # the failed write marked it down: the next try fails at once
    assert events_flush() == 0
    assert len(buffered(KIND)) == 3
    _primary_back()  # a good probe
    assert events_flush() >= 3  # the primary's own db_node_down event too
    assert [row.message for row in _stored(kind=KIND)] == ["first", "second", "during"]
    assert events_buffer.pending() == []
    assert _stored(kind="db_node_down", subject=PRIMARY)


def test_read_only_mode_does_not_hold_the_record_back() -> None:
    """Maintenance mode stops the shop's writes; the record of what happens meanwhile is written (the router's
    OPERATOR_MODELS), else switching read-only on would be the one change nobody could see."""
    event_record(KIND, message="during maintenance")
    controls_replace([(READ_ONLY, True)])
    assert events_flush() == 1
    assert [row.message for row in _stored(kind=KIND)] == ["during maintenance"]


def test_a_full_buffer_drops_the_oldest_and_counts_it(monkeypatch, caplog) -> None:
    monkeypatch.setattr(buffer, "BUFFER_MAX", 3)
    dropped = _sample("bulwark_resilience_events_dropped_total")
    with caplog.at_level(logging.ERROR, logger="resilience.events"):
        for n in range(5):
            event_record(KIND, message=f"event {n}")
    assert [event.message for event in buffered(KIND)] == ["event 2", "event 3", "event 4"]
    assert events_buffer.dropped == 2
    assert _sample("bulwark_resilience_events_dropped_total") == dropped + 2
    assert _sample("bulwark_resilience_events_buffered") == 3
    logged = [r for r in caplog.records if getattr(r, "event", None) == "resilience_events_dropped"]
    assert len(logged) == 1  # once per outage, not once per event
    assert events_flush() == 3
    assert [row.message for row in _stored(kind=KIND)] == ["event 2", "event 3", "event 4"]
    assert _sample("bulwark_resilience_events_buffered") == 0


def test_a_failed_write_keeps_the_bound(monkeypatch) -> None:
    monkeypatch.setattr(buffer, "BUFFER_MAX", 3)
    for n in range(3):
        event_record(KIND, message=f"event {n}")
    with dead(PRIMARY):
        event_record(KIND, message="event 3")
        assert events_flush() == 0
    assert [event.message for event in buffered(KIND)][-2:] == ["event 2", "event 3"]
    assert len(events_buffer.pending()) == 3  # the primary's db_node_down took a place too: the oldest went


def test_events_are_counted_by_kind() -> None:
    before = _sample("bulwark_resilience_events_total", kind=KIND)
    event_record(KIND, message="one")
    event_record(KIND, message="two")
    assert _sample("bulwark_resilience_events_total", kind=KIND) == before + 2
    assert _sample("bulwark_resilience_events_buffered") == 2


def test_concurrent_recording_loses_nothing() -> None:
    threads, each = 8, 50

    def record(n: int) -> None:
        for i in range(each):
            event_record(KIND, message=f"{n}-{i}")

    outcomes = run_together([lambda n=n: record(n) for n in range(threads)])
    assert all(status == "ok" for status, _ in outcomes), outcomes
    assert len(buffered(KIND)) == threads * each
    assert events_flush() == threads * each
    assert ResilienceEvent.objects.using(PRIMARY).filter(kind=KIND).count() == threads * each


def test_values_the_database_cannot_hold_never_block_the_buffer() -> None:
    """One event that would fail the insert would fail every flush after it: they are made storable on record."""
    circular: dict = {}
    circular["self"] = circular
    event_record(KIND, message="nul\x00here", subject="s\x00", detail={"obj": object(), "text": "a\x00b"})
    event_record(KIND, message="cycle", detail=circular)
    event_record(KIND, message="nan", detail={"lag": float("nan")})
    event_record(KIND, message="long " * 1000, subject="x" * 500, severity="catastrophic")
    assert events_flush() == 4
    nul, cycle, nan, long = _stored(kind=KIND)
    assert nul.message == "nulhere" and nul.subject == "s" and nul.detail["text"] == "ab"
    assert nul.detail["obj"].startswith("<object object")
    assert set(cycle.detail) == {"unrecordable_detail"} and set(nan.detail) == {"unrecordable_detail"}
    assert len(long.subject) == 200 and long.severity == "warning"


def test_event_record_never_raises_into_its_caller(monkeypatch, caplog) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("buffer broken")

    monkeypatch.setattr(events_buffer, "append", broken)
    with caplog.at_level(logging.ERROR, logger="resilience.events"):
        event_record(KIND, message="lost")  # no exception
    assert "buffer broken" in caplog.text


def test_the_node_monitor_writes_the_buffer_while_the_primary_answers() -> None:
    event_record(KIND, message="via the monitor")
    monitor = NodeMonitor(registry())
    try:
        monitor.run_primary_tasks()  # what its housekeeping thread runs every second
    finally:
        monitor.close()
    assert [row.message for row in _stored(kind=KIND)] == ["via the monitor"]
    assert events_buffer.pending() == []


def test_a_flush_already_running_is_not_joined(monkeypatch) -> None:
    """The monitor never waits on another flush (a test's, say): it leaves the events to the one running."""
    event_record(KIND, message="one")
    release, entered = threading.Event(), threading.Event()
    write = buffer._write

    def slow_write(batch: list) -> None:
        entered.set()
        release.wait(10)
        write(batch)

    monkeypatch.setattr(buffer, "_write", slow_write)
    first = threading.Thread(target=lambda: (events_flush(), connections.close_all()))
    first.start()
    try:
        assert entered.wait(10)
        event_record(KIND, message="two")  # recording goes on during a write
        assert events_flush() == 0
        assert [event.message for event in buffered(KIND)] == ["one", "two"]  # in flight, then waiting
    finally:
        release.set()
        first.join(10)
    assert [row.message for row in _stored(kind=KIND)] == ["one"]
    assert [event.message for event in buffered(KIND)] == ["two"]
