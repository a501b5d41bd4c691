"""Per-request routing state, in a ContextVar: safe under threads and ASGI, never shared between requests.

Outside a request (management commands, the monitor thread) there is no state: reads use replicas only
when healthy and nothing is pinned.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RoutingState:
    safe_method: bool = True  # GET/HEAD/OPTIONS: may be run again on another node
    min_lsn: int | None = None  # the client's last write: replicas must have replayed it
    wrote: bool = False  # a write went to the primary: later reads of this request go there too
    replica: str | None = None  # the replica chosen for this request (sticky within it)
    stale: bool = False  # a read that wanted fresh data was served by a replica (primary down)
    failed: set[str] = field(default_factory=set)  # aliases that failed during this request
    read_only_refused: bool = False  # the "primary" turned out to be read-only (SQLSTATE 25006)
    retried: bool = False
    force_primary: bool = False  # inside primary_reads(): reads go to the primary when it is up
    outcome_unknown: bool = False  # a write was cut off after it reached the primary (it may have committed)


_state: ContextVar[RoutingState | None] = ContextVar("bulwark_db_routing", default=None)


def current() -> RoutingState | None:
    return _state.get()


@contextmanager
def routing(state: RoutingState) -> Iterator[RoutingState]:
    token = _state.set(state)
    try:
        yield state
    finally:
        _state.reset(token)


def record_failure(alias: str, *, read_only: bool = False) -> None:
    state = _state.get()
    if state is not None:
        state.failed.add(alias)
        state.read_only_refused = state.read_only_refused or read_only


def record_write() -> None:
    state = _state.get()
    if state is not None:
        state.wrote = True


def record_outcome_unknown() -> None:
    state = _state.get()
    if state is not None:
        state.outcome_unknown = True


def read_from_replica() -> bool:
    """Whether this request has read from a replica so far."""
    state = _state.get()
    return state is not None and state.replica is not None


@contextmanager
def primary_reads() -> Iterator[None]:
    """Reads in this block go to the primary (when it is up): for a lookup that a lagging replica may miss."""
    state = _state.get()
    if state is None:
        yield
        return
    previous, state.force_primary = state.force_primary, True
    try:
        yield
    finally:
        state.force_primary = previous
