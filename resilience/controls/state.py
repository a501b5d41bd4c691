"""The switches as this process knows them: in memory, refreshed by the database monitor every second."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

READ_ONLY = "db.read_only"
PRIMARY_ONLY_READS = "db.primary_only_reads"
DRAIN_PREFIX = "db.drain."
RATELIMIT_FORCE_MEMORY = "ratelimit.force_memory"  # the cache (and so rate limits) skips Redis


@dataclass(frozen=True)
class DbControls:
    read_only: bool = False
    primary_only_reads: bool = False
    drained: frozenset[str] = frozenset()


_lock = threading.Lock()
_switches: dict[str, bool] = {}
_db = DbControls()


def controls_replace(rows: Iterable[tuple[str, bool]]) -> None:
    """Install the switches read from the database (all of them)."""
    global _switches, _db
    switches = dict(rows)
    with _lock:
        _switches = switches
        _db = DbControls(
            read_only=switches.get(READ_ONLY, False),
            primary_only_reads=switches.get(PRIMARY_ONLY_READS, False),
            drained=frozenset(
                key.removeprefix(DRAIN_PREFIX) for key, on in switches.items() if on and key.startswith(DRAIN_PREFIX)
            ),
        )


def control_apply_local(key: str, enabled: bool) -> None:
    """Obey a change made in this process at once, before the next refresh."""
    with _lock:
        switches = {**_switches, key: enabled}
    controls_replace(switches.items())


def db_controls() -> DbControls:
    return _db


def ratelimit_force_memory() -> bool:
    """The operator told every worker to keep rate-limit counters (and the cache) in process memory."""
    return _switches.get(RATELIMIT_FORCE_MEMORY, False)


def switches() -> dict[str, bool]:
    with _lock:
        return dict(_switches)
