"""Each test starts with an empty event buffer of this process, and leaves one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience.events.buffer import BufferedEvent, events_buffer


@pytest.fixture(autouse=True)
def _empty_event_buffer() -> Iterator[None]:
    events_buffer.reset()
    yield
    events_buffer.reset()


def buffered(kind: str) -> list[BufferedEvent]:
    """This process's events of ``kind`` not written yet, oldest first."""
    return [event for event in events_buffer.pending() if event.kind == kind]
