"""Reading the events for the dashboard: the stored ones and this worker's still buffered, with the database down.

Stored rows are read as any read (a replica, else the primary); a node that fails is marked down by the backend,
so a second try goes to another one. With no node answering, the buffered events are all there is
(``stored_readable=False``). Nothing here writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError

from resilience.events.buffer import events_buffer
from resilience.events.models import ResilienceEvent

logger = logging.getLogger("resilience.events")

READ_ATTEMPTS = 2  # the first failure opens that node's breaker: the second read goes elsewhere, at once
_FIELDS = ("uid", "at", "kind", "severity", "subject", "message", "detail", "worker")


@dataclass(frozen=True)
class EventsView:
    events: list[dict[str, Any]]  # newest first; ``buffered`` True for this worker's events not written yet
    stored_readable: bool  # False: no database node answered, only this worker's buffered events are shown
    dropped: int  # events this worker dropped unwritten (its buffer was full)


def events_recent(*, limit: int = 50) -> EventsView:
    """The ``limit`` newest events: this worker's buffered ones merged with the stored ones."""
    stored, readable = _stored(limit)
    stored_uids = {row["uid"] for row in stored}
    # An event being written right now can be in both: the stored row wins.
    buffered = [event.as_dict(buffered=True) for event in events_buffer.pending() if str(event.uid) not in stored_uids]
    merged = sorted([*stored, *buffered], key=lambda event: event["at"], reverse=True)
    return EventsView(events=merged[:limit], stored_readable=readable, dropped=events_buffer.dropped)


def _stored(limit: int) -> tuple[list[dict[str, Any]], bool]:
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            rows = list(ResilienceEvent.objects.order_by("-at", "-id").values(*_FIELDS)[:limit])
        except DatabaseError as exc:
            logger.info("stored resilience events not readable (try %d): %s", attempt, exc)
            continue
        return [{**row, "uid": str(row["uid"]), "buffered": False} for row in rows], True
    return [], False
