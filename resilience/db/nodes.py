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
from resilience.db.watchdog import watchdog
from resilience.events import event_record

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
    latency: float | None = None  # the probe's round trip, smoothed (seconds)
    slow: bool = False  # a replica answering much slower than the primary: out of the read rotation
    good_probes: int = 0  # consecutive good probes while down (the node comes back after ProbePolicy's count)

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
            "latency_ms": round(self.latency * 1000, 1) if self.latency is not None else None,
            "slow": self.slow,
        }


@dataclass(frozen=True)
class ProbePolicy:
    """How probe timings judge a node. The default judges by outcomes only (a registry without a monitor, tests);
    the process's registry with its monitor running uses :data:`MONITORED` (see :mod:`resilience.db.monitor`)."""

    suspect_after: float | None = None  # a probe in flight this long: no new connection, no new reads there
    recover_after: int = 1  # consecutive good probes that bring a node that was down back
    slow_after: float | None = None  # smoothed replica probe latency over this (and 3x the primary's): slow
    slow_clear: float | None = None  # ... and back in rotation once under this
    smoothing: float = 0.3  # weight of the newest probe in the smoothed latency


# Probes every 0.1 s with a 0.5 s deadline (monitor.py): a probe 0.25 s overdue makes the node suspect, one past its
# deadline marks it down and cuts off this process's queries on it. Back after 3 good probes in a row (~0.3 s).
# Slowness is judged on a slowly moving average (weight 0.1: ~2 s of probes), so the odd slow probe of a busy
# machine moves nothing, while a replica that is slow all the time leaves the rotation within seconds.
MONITORED = ProbePolicy(suspect_after=0.25, recover_after=3, slow_after=0.05, slow_clear=0.02, smoothing=0.1)


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
        policy: ProbePolicy = ProbePolicy(),  # frozen: one shared default is safe
    ) -> None:
        self._lock = threading.Lock()
        self.policy = policy
        # Set by a running NodeMonitor: only a process that probes follows the fleet's trips (it is also the one
        # that can find the node back; a command without a monitor would keep a reported node down for good).
        self.probing = False
        self._probe_started: dict[str, float] = {}  # alias -> monotonic start of the probe in flight
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
        """Whether a request may open a connection to the node: reachable, and not suspect (a probe overdue)."""
        self._follow_trips()
        return self.answering(alias)

    def answering(self, alias: str) -> bool:
        """:meth:`may_connect` as this process sees it now, without reading the fleet's trips: no I/O (the query
        watchdog's thread asks it at a deadline and must never wait on Redis)."""
        with self._lock:
            state = self._states.get(alias)  # an alias this registry does not know (a test's) is not guarded
            suspect = self._suspect(alias)
        return self.naive or state is None or (state.reachable and not suspect)

    def primary_available(self) -> bool:
        """Whether writes may go to the primary (a suspect primary still takes them on open connections)."""
        self._follow_trips()
        with self._lock:
            return self.naive or self._states[PRIMARY].reachable

    def probe_begun(self, alias: str) -> None:
        with self._lock:
            self._probe_started[alias] = time.monotonic()

    def probe_ended(self, alias: str) -> None:
        with self._lock:
            self._probe_started.pop(alias, None)

    def _suspect(self, alias: str) -> bool:
        """A probe of the node is overdue (caller holds the lock): it may have just hung."""
        started = self._probe_started.get(alias)
        limit = self.policy.suspect_after
        return limit is not None and started is not None and time.monotonic() - started > limit

    def mark_down(self, alias: str, error: BaseException | str, *, tell_fleet: bool = True) -> None:
        """The node failed (this process saw it, or the fleet told it with ``tell_fleet=False``).

        Seen here: the trip is published, and this process's queries still in flight on the node are cut off at
        once (:meth:`QueryWatchdog.cut_node`), so their requests run again elsewhere instead of each waiting out
        its own deadline.
        """
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        now = time.time()
        with self._lock:
            if alias not in self._states:
                return
            before = self._states[alias]
            changed_at = now if before.reachable else before.changed_at
            self._states[alias] = replace(
                before, reachable=False, last_error=reason, changed_at=changed_at, good_probes=0
            )
        if before.reachable:
            logger.warning(
                "database node down: %s (%s)",
                alias,
                reason,
                extra={"event": "db_node_down", "node": alias, "error": reason},
            )
            if not logger.disabled:  # silenced: a guard rail's scratch registry, whose failures are not real
                event_record(
                    "db_node_down",
                    subject=alias,
                    severity="error" if alias == PRIMARY else "warning",
                    message=f"Database node {alias} is down: {reason}",
                    detail={"error": reason, "reported_by_another_worker": not tell_fleet},
                )
            if tell_fleet and self.trips is not None:
                self.trips.publish(alias, now)
        if before.reachable and tell_fleet:
            cut = watchdog.cut_node(alias)
            if cut:
                logger.info("cut off %d query(ies) in flight on %s", cut, alias, extra={"node": alias, "cut": cut})

    def _follow_trips(self) -> None:
        """Mark down the nodes other workers found dead since this process last probed them (once a second)."""
        if self.trips is None or not self.probing:
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
        self,
        alias: str,
        *,
        in_recovery: bool,
        lag_seconds: float | None,
        lag_bytes: int | None,
        replay_lsn: int | None,
        latency: float | None = None,
    ) -> None:
        """A good probe. A node that was down comes back after ``policy.recover_after`` of them in a row."""
        now = time.time()
        with self._lock:
            before = self._states[alias]
            good = before.good_probes + 1
            reachable = before.reachable or good >= self.policy.recover_after
            smoothed = self._smoothed(before.latency, latency)
            self._states[alias] = replace(
                before,
                reachable=reachable,
                in_recovery=in_recovery,
                lag_seconds=lag_seconds,
                lag_bytes=lag_bytes,
                replay_lsn=replay_lsn,
                probed_at=now,
                last_error="" if reachable else before.last_error,
                changed_at=before.changed_at if before.reachable or not reachable else now,
                latency=smoothed,
                slow=self._slow(before, smoothed),
                good_probes=0 if reachable else good,
            )
            after = self._states[alias]
        if after.slow != before.slow:
            event = "db_replica_slow" if after.slow else "db_replica_fast"
            logger.warning(
                "%s: %s (probe %.0f ms)",
                event,
                alias,
                (smoothed or 0.0) * 1000,
                extra={"event": event, "node": alias, "latency_ms": round((smoothed or 0.0) * 1000, 1)},
            )
        if not before.reachable and reachable:
            logger.warning("database node up: %s", alias, extra={"event": "db_node_up", "node": alias})
            if not logger.disabled:
                event_record("db_node_up", subject=alias, message=f"Database node {alias} answers again")
        if before.in_recovery is not None and before.in_recovery != in_recovery:  # a promotion (or a demotion)
            role = "replica" if in_recovery else "primary"
            logger.warning(
                "database node %s is a %s now", alias, role, extra={"event": "db_failover", "node": alias, "role": role}
            )
            if not logger.disabled:
                event_record(
                    "db_failover",
                    subject=alias,
                    severity="warning",
                    message=f"Database node {alias} is a {role} now (configured as {before.configured_role})",
                    detail={"role": role, "configured_role": before.configured_role},
                )
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

    def _smoothed(self, previous: float | None, latency: float | None) -> float | None:
        if latency is None:
            return previous
        weight = self.policy.smoothing
        return (previous or 0.0) * (1 - weight) + latency * weight  # from 0: one slow first probe is no verdict

    def _slow(self, before: NodeState, smoothed: float | None) -> bool:
        """A replica much slower than the primary (caller holds the lock); both slow = a busy machine, not a node."""
        policy = self.policy
        if before.configured_role != "replica" or smoothed is None or policy.slow_after is None:
            return False
        if before.slow:
            return smoothed > (policy.slow_clear if policy.slow_clear is not None else policy.slow_after)
        primary = self._states[PRIMARY].latency or 0.0
        return smoothed > policy.slow_after and smoothed > 3 * primary

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
            suspect = {alias for alias in self.replica_aliases if self._suspect(alias)}
        candidates = [
            s.alias
            for s in states
            if self.naive or (s.reachable and not self._lagging(s) and not s.slow and s.alias not in suspect)
        ]
        if len(candidates) > 1:
            shift = next(self._rotation) % len(candidates)
            candidates = candidates[shift:] + candidates[:shift]
        return candidates

    def reachable_replicas(self) -> list[str]:
        """Replicas that answer at all (lagging ones included): the last resort when the primary is down."""
        self._follow_trips()
        with self._lock:
            return [
                a for a in self.replica_aliases if self.naive or (self._states[a].reachable and not self._suspect(a))
            ]


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
                    policy=MONITORED if settings.BULWARK_DB_MONITOR and not naive else ProbePolicy(),
                )
    return _registry


def reset_registry() -> None:
    """Forget every node's state, this process's and the trips it told the fleet (tests)."""
    global _registry
    with _registry_lock:
        if _registry is not None and _registry.trips is not None:
            _registry.trips.clear(list(_registry.snapshot()))
        _registry = None
