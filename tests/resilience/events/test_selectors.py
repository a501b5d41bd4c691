"""events_recent: this worker's buffered events merged with the stored ones, newest first, and still an answer
with the primary down (a replica) or every node down (the buffered ones only). It writes nothing."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import CaptureQueriesContext

from resilience.db.nodes import PRIMARY
from resilience.events import buffer, event_record, events_flush
from resilience.events.buffer import events_buffer
from resilience.events.models import ResilienceEvent
from resilience.events.selectors import events_recent
from tests.helpers import dead, poll

REPLICA = "replica_1"
KIND = "test_event"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),  # dead() closes connections
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


def _ours(view) -> list[tuple[str, bool]]:
    return [(event["message"], event["buffered"]) for event in view.events if event["kind"] == KIND]


def _stored_then_buffered() -> None:
    event_record(KIND, message="stored 1")
    event_record(KIND, message="stored 2")
    assert events_flush() == 2
    event_record(KIND, message="buffered 3")


def test_buffered_and_stored_events_are_merged_newest_first() -> None:
    _stored_then_buffered()
    view = events_recent()
    assert view.stored_readable is True and view.dropped == 0
    assert _ours(view) == [("buffered 3", True), ("stored 2", False), ("stored 1", False)]
    newest = view.events[0]
    assert set(newest) >= {"uid", "at", "kind", "severity", "subject", "message", "detail", "worker", "buffered"}
    assert [event["message"] for event in events_recent(limit=2).events] == ["buffered 3", "stored 2"]


def test_an_event_being_written_is_listed_once() -> None:
    event_record(KIND, message="both")
    [event] = events_buffer.pending()
    assert events_flush() == 1
    events_buffer.append(event)  # still in the buffer (a write in flight) and already stored
    assert _ours(events_recent()) == [("both", False)]


def test_reading_writes_nothing() -> None:
    _stored_then_buffered()
    pending = events_buffer.pending()
    with CaptureQueriesContext(connections[PRIMARY]) as queries:
        events_recent()
    assert queries.captured_queries, "the stored events were not read"
    assert all(query["sql"].lstrip().upper().startswith("SELECT") for query in queries.captured_queries), queries
    assert events_buffer.pending() == pending
    assert ResilienceEvent.objects.using(PRIMARY).count() == 2


def test_with_the_primary_down_the_stored_events_come_from_a_replica() -> None:
    _stored_then_buffered()
    poll(lambda: ResilienceEvent.objects.using(REPLICA).filter(kind=KIND).count() == 2, timeout=10, interval=0.05)
    with dead(PRIMARY):
        view = events_recent()  # the primary is tried first (primary-only reads): it fails, the replica answers
    assert view.stored_readable is True
    assert _ours(view) == [("buffered 3", True), ("stored 2", False), ("stored 1", False)]


def test_with_every_node_down_the_buffered_events_are_still_shown(monkeypatch) -> None:
    _stored_then_buffered()
    monkeypatch.setattr(buffer, "BUFFER_MAX", 1)
    event_record(KIND, message="buffered 4")  # the buffer is full: "buffered 3" is dropped
    monkeypatch.setattr(buffer, "BUFFER_MAX", 10)  # room for the nodes' own db_node_down events
    with dead(PRIMARY, REPLICA):
        view = events_recent()
    assert view.stored_readable is False
    assert _ours(view) == [("buffered 4", True)]
    assert view.dropped == 1
