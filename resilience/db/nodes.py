"""Per-process state of every database node: reachable or not, role, lag; one breaker each.

A node is marked down by the first failure a request meets (its breaker opens at once) and marked up
again only by a successful probe from the monitor thread, so an outage costs at most one timeout per
process. The process's registry shares its trips with the fleet (:mod:`resilience.db.trips`): a node one
worker found dead is skipped by the others within about a second. Every change of state is logged
(structured) and kept for the health layer.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from resilience.db.trips import SharedNodeTrips

logger = logging.getLogger("resilience.db")

PRIMARY = "default"


@dataclass(frozen=True)
class NodeState:
    alias: str
    configured_role: str  # "primary" or "replica"
    reachable: bool = True
    in_recovery: bool | None = None  # what the node says it is (None = not probed yet)
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    replay_lsn: int | None = None
    last_error: str = ""
    changed_at: float = field(default_factory=time.time)
    probed_at: float | None = None

    @property
    def breaker(self) -> str:
        return "closed" if self.reachable else "open"

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "role": self.configured_role
            if self.in_recovery is None
            else ("replica" if self.in_recovery else "primary"),
            "configured_role": self.configured_role,
            "reachable": self.reachable,
            "breaker": self.breaker,
            "lag_seconds": self.lag_seconds,
            "lag_bytes": self.lag_bytes,
            "last_error": self.last_error,
            "changed_at": self.changed_at,
            "probed_at": self.probed_at,
        }


class NodeRegistry:
    """Thread-safe node states for this process."""

    def __init__(
        self,
        replica_aliases: list[str],
        max_lag_seconds: float,
        naive: bool = False,
        *,
        trips: SharedNodeTrips | None = None,
        trip_sync_seconds: float = 1.0,
    ) -> None:
        self._lock = threading.Lock()
        self.trips = trips  # None: this registry's trips are its own (a scratch registry, the naive mode)
        self.trip_sync_seconds = trip_sync_seconds
        self._trips_read_at = -math.inf
        self._states = {PRIMARY: NodeState(PRIMARY, "primary")}
        self._states.update({alias: NodeState(alias, "replica") for alias in replica_aliases})
        self.replica_aliases = list(replica_aliases)
        self.max_lag_seconds = max_lag_seconds
        # naive = the seed's approach, kept for benchmarks: no breaker, every request tries every node.
        self.naive = naive
        self._rotation = itertools.count()

    def state(self, alias: str) -> NodeState:
        with self._lock:
            return self._states[alias]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {alias: state.as_dict() for alias, state in self._states.items()}

    def may_connect(self, alias: str) -> bool:
        self._follow_trips()
        with self._lock:
            state = self._states.get(alias)  # an alias this registry does not know (a test's) is not guarded
        return self.naive or state is None or state.reachable

    def primary_available(self) -> bool:
        return self.may_connect(PRIMARY)

    def mark_down(self, alias: str, error: BaseException | str, *, tell_fleet: bool = True) -> None:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        now = time.time()
        with self._lock:
            if alias not in self._states:
                return
            before = self._states[alias]
            self._states[alias] = replace(before, reachable=False, last_error=reason, changed_at=now)
        if before.reachable:
            logger.warning(
                "database node down: %s (%s)",
                alias,
                reason,
                extra={"event": "db_node_down", "node": alias, "error": reason},
            )
            if tell_fleet and self.trips is not None:
                self.trips.publish(alias, now)

    def _follow_trips(self) -> None:
        """Mark down the nodes other workers found dead since this process last probed them (once a second)."""
        if self.trips is None:
            return
        now = time.monotonic()
        if now - self._trips_read_at < self.trip_sync_seconds:
            return
        self._trips_read_at = now
        with self._lock:
            aliases = list(self._states)
        for alias, tripped_at in self.trips.read(aliases).items():
            state = self.state(alias)
            if state.reachable and tripped_at > (state.probed_at or 0.0):
                self.mark_down(alias, "reported down by another worker", tell_fleet=False)

    def record_probe(
        self, alias: str, *, in_recovery: bool, lag_seconds: float | None, lag_bytes: int | None, replay_lsn: int | None
    ) -> None:
        now = time.time()
        with self._lock:
            before = self._states[alias]
            self._states[alias] = replace(
                before,
                reachable=True,
                in_recovery=in_recovery,
                lag_seconds=lag_seconds,
                lag_bytes=lag_bytes,
                replay_lsn=replay_lsn,
                probed_at=now,
                last_error="",
                changed_at=before.changed_at if before.reachable else now,
            )
        if not before.reachable:
            logger.warning("database node up: %s", alias, extra={"event": "db_node_up", "node": alias})
        was_lagging, lagging = self._lagging(before), self._lagging(self.state(alias))
        if lagging != was_lagging and before.probed_at is not None:
            event = "db_replica_lagging" if lagging else "db_replica_caught_up"
            logger.warning(
                "%s: %s (lag %.1fs)",
                event,
                alias,
                lag_seconds or 0.0,
                extra={"event": event, "node": alias, "lag_seconds": lag_seconds},
            )

    def note_replay(self, alias: str, replay_lsn: int) -> None:
        """A fresher replay position read by a request (not a full probe)."""
        with self._lock:
            self._states[alias] = replace(self._states[alias], replay_lsn=replay_lsn)

    def _lagging(self, state: NodeState) -> bool:
        return state.configured_role == "replica" and (state.lag_seconds or 0.0) > self.max_lag_seconds

    def readable_replicas(self, excluded: frozenset[str] = frozenset()) -> list[str]:
        """Replicas that may serve reads now: reachable, not lagging, not excluded; rotated per call."""
        self._follow_trips()
        with self._lock:
            states = [self._states[alias] for alias in self.replica_aliases if alias not in excluded]
        candidates = [s.alias for s in states if self.naive or (s.reachable and not self._lagging(s))]
        if len(candidates) > 1:
            shift = next(self._rotation) % len(candidates)
            candidates = candidates[shift:] + candidates[:shift]
        return candidates

    def reachable_replicas(self) -> list[str]:
        """Replicas that answer at all (lagging ones included): the last resort when the primary is down."""
        self._follow_trips()
        with self._lock:
            return [a for a in self.replica_aliases if self.naive or self._states[a].reachable]


_registry: NodeRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> NodeRegistry:
    """This process's registry, built from the settings on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                from django.conf import settings

                config = settings.BULWARK_CONFIG
                naive = config.db_failover_mode == "naive"
                _registry = NodeRegistry(
                    [alias for alias in settings.DATABASES if alias != PRIMARY],
                    max_lag_seconds=config.db_replica_max_lag.total_seconds(),
                    naive=naive,
                    trips=None if naive else SharedNodeTrips(),
                )
    return _registry


def reset_registry() -> None:
    """Forget every node's state, this process's and the trips it told the fleet (tests)."""
    global _registry
    with _registry_lock:
        if _registry is not None and _registry.trips is not None:
            _registry.trips.clear(list(_registry.snapshot()))
        _registry = None
