"""The per-process database monitor: probes every node ten times a second, each on its own thread with a short
deadline of its own, and refreshes the operator switches every second.

A probe on an open connection to a hung server never returns: only a client-side deadline ends it
(:mod:`resilience.db.watchdog`, :data:`PROBE_DEADLINE_SECONDS`, much shorter than the deadline legitimate slow
queries get). While a probe is overdue (:data:`resilience.db.nodes.MONITORED`) the node is *suspect*: requests
open no new connection to it and send no new read there. A probe past its deadline marks the node down, which
cuts off this process's queries still in flight on it (their requests run again on a healthy node) and tells the
fleet (:mod:`resilience.db.trips`). A node comes back after a few good probes in a row, so nothing flaps. Each
probe's round trip is kept (smoothed): a replica much slower than the primary leaves the read rotation.

Steady-state cost: one small query per node every :data:`PROBE_INTERVAL_SECONDS` per worker (10 per node per
second), plus one switch read per second, each sent on libpq itself (:mod:`resilience.db.libpq`).

Each node gets one dedicated autocommit connection per purpose (probe, switches; not Django's), re-opened after a
failure. Lag is measured on the replica itself (received vs replayed WAL), so a dead primary does not make a
current replica look lagging. Other areas hand the monitor work that waits for the primary
(:func:`monitor_task_register`, e.g. refresh tokens blacklisted during an outage): it runs every second while the
primary answers, on the housekeeping thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections

from resilience.controls.state import controls_replace
from resilience.db import libpq
from resilience.db.backend.connect import DeadlineConnection, connect_deadline
from resilience.db.lsn import lsn_to_int
from resilience.db.nodes import PRIMARY, NodeRegistry, registry
from resilience.db.watchdog import watchdog

logger = logging.getLogger("resilience.db")

PROBE_INTERVAL_SECONDS = 0.1
PROBE_DEADLINE_SECONDS = 0.5  # a live node answers these in a millisecond or two; a busy one in well under this
HOUSEKEEPING_SECONDS = 1.0  # operator switches, tasks waiting for the primary

# On a standby pg_current_wal_insert_lsn() raises ("recovery is in progress"): asked only of a node in charge.
PRIMARY_PROBE = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END::text"
)
REPLICA_PROBE = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       pg_last_wal_receive_lsn()::text,
       CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END
"""
CONTROLS_QUERY = "SELECT key, enabled FROM resilience_operatorcontrol"

_primary_tasks: list[Callable[[], None]] = []
_always_tasks: list[Callable[[], None]] = []


def monitor_task_register(task: Callable[[], None], *, needs_primary: bool = True) -> None:
    """Run ``task`` on the monitor's housekeeping thread every second: while the primary answers, or always
    (``needs_primary=False``: a task that reads from a replica when the primary is down)."""
    tasks = _primary_tasks if needs_primary else _always_tasks
    if task not in tasks:
        tasks.append(task)


class NodeMonitor:
    def __init__(
        self, nodes: NodeRegistry, interval: float = PROBE_INTERVAL_SECONDS, deadline: float = PROBE_DEADLINE_SECONDS
    ) -> None:
        self.nodes = nodes
        self.interval = interval
        self.deadline = deadline
        self._connections: dict[tuple[str, str], psycopg.Connection] = {}  # (purpose, alias) -> connection
        self._connections_lock = threading.Lock()
        self._stop = threading.Event()
        aliases = [PRIMARY, *nodes.replica_aliases]
        self._threads = [
            threading.Thread(target=self._probe_loop, args=(alias,), name=f"db-probe-{alias}", daemon=True)
            for alias in aliases
        ]
        self._threads.append(threading.Thread(target=self._housekeeping_loop, name="db-monitor", daemon=True))
        self.primary_lsn: int | None = None
        self.probes = 0  # probes run so far (the benchmark reports the rate)
        self._task_generation: tuple[Any, ...] = ()  # the nodes' states when the tasks last ran

    def start(self) -> None:
        self.nodes.probing = True
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.nodes.probing = False
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=self.deadline + 5)
        self.close()

    def close(self) -> None:
        """Close the monitor's connections (a monitor used for one ``probe_all`` without its threads)."""
        with self._connections_lock:
            keys = list(self._connections)
        for purpose, alias in keys:
            self._drop(alias, purpose)

    def _probe_loop(self, alias: str) -> None:
        while not self._stop.is_set():
            self._probe(alias)
            self._stop.wait(self.interval)

    def _housekeeping_loop(self) -> None:
        while not self._stop.is_set():
            self._refresh_controls()
            self._tidy_task_connections()
            self._run_tasks(_always_tasks)
            if self.nodes.primary_available():
                self.run_primary_tasks()
            self._stop.wait(HOUSEKEEPING_SECONDS)

    def run_primary_tasks(self) -> None:
        self._run_tasks(_primary_tasks)

    def _tidy_task_connections(self) -> None:
        """The tasks use Django's connections on this thread, which no request end closes: close those a failure
        broke, and all of them after any node changed state (one opened before a restart fails its first query,
        which would mark the node that just came back down again). The others are health-checked again before
        this round's first query, as a request's are: one the server ended meanwhile (an idle timeout, this process
        frozen) is replaced without marking its node down (resilience/db/backend/base.py)."""
        generation = tuple(
            (alias, state["reachable"], state["changed_at"]) for alias, state in self.nodes.snapshot().items()
        )
        changed, self._task_generation = generation != self._task_generation, generation
        for conn in connections.all(initialized_only=True):
            raw = conn.connection
            if raw is not None and (changed or raw.closed or raw.broken):
                conn.close()
            else:
                conn.health_check_done = False

    @staticmethod
    def _run_tasks(tasks: list[Callable[[], None]]) -> None:
        for task in list(tasks):
            try:
                task()
            except Exception:  # a task's bug must not stop the monitor: logged with its traceback
                logger.exception("monitor task %s failed", getattr(task, "__qualname__", task))

    def probe_all(self) -> None:
        self.primary_lsn = None
        for alias in [PRIMARY, *self.nodes.replica_aliases]:
            self._probe(alias)
        self._refresh_controls()

    def _connection(self, alias: str, purpose: str, *, fresh: bool = False) -> psycopg.Connection:
        key = (purpose, alias)
        with self._connections_lock:
            conn = self._connections.get(key)
        if fresh and conn is not None:
            self._drop(alias, purpose)
            conn = None
        if conn is None or conn.closed or conn.broken:
            params = connections[alias].get_connection_params()
            token = connect_deadline.set(self.deadline)  # a hung node: given up on in the probe's time, not 2 s
            try:
                conn = DeadlineConnection.connect(**params, autocommit=True)
            finally:
                connect_deadline.reset(token)
            with self._connections_lock:
                self._connections[key] = conn
        return conn

    def _query(self, alias: str, sql: str, purpose: str = "probe") -> list[tuple[Any, ...]]:
        """Run ``sql`` on the node. An error on a connection kept from earlier that is not a timeout says the
        connection is gone (a server-side idle timeout, a restart of a proxy, a long freeze of this process), not
        yet the node: the query runs once more at once on a new connection, whose failure does say it. A dead
        node refuses that at once and a hung one already timed out, so neither is found any later."""
        started = time.monotonic()
        reused = self._has_connection(alias, purpose)
        try:
            return self._query_once(alias, sql, purpose)
        except psycopg.Error:
            if not reused or time.monotonic() - started >= self.deadline:
                raise
            logger.info("the %s connection to %s was gone; asking on a new one", purpose, alias)
            return self._query_once(alias, sql, purpose, fresh=True)

    def _has_connection(self, alias: str, purpose: str) -> bool:
        with self._connections_lock:
            conn = self._connections.get((purpose, alias))
        return conn is not None and not conn.closed and not conn.broken

    def _query_once(self, alias: str, sql: str, purpose: str, *, fresh: bool = False) -> list[tuple[Any, ...]]:
        # Overdue probe = suspect node: this worker's safe reads on it are hedged off (re-run elsewhere) at once.
        suspect_after = self.nodes.policy.suspect_after if purpose == "probe" else None
        if suspect_after is not None and suspect_after >= self.deadline:
            suspect_after = None  # cut before it could be suspect: the deadline alone
        timer = None
        if suspect_after is not None and (fresh or not self._has_connection(alias, purpose)):
            # A connection to open first, and no socket to arm yet: the suspicion on a timer of its own.
            timer = watchdog.call_after(suspect_after, lambda: self._suspected(alias), f"{alias} (suspect)")
        try:
            conn = self._connection(alias, purpose, fresh=fresh)
            label, socket, port = f"{alias} ({purpose})", conn.pgconn.socket, conn.info.port
            if suspect_after is not None and timer is None:
                # One target for both stages (a probe runs ten times a second per node and worker): the suspicion
                # at suspect_after, the cut at the deadline.
                ticket = watchdog.arm(
                    socket,
                    suspect_after,
                    label,
                    port=port,
                    cancel=functools.partial(self._overdue, alias),
                    grace=self.deadline - suspect_after,
                    announced=False,
                )
            else:
                ticket = watchdog.arm(socket, self.deadline, label, port=port)
            try:
                return libpq.rows(conn, sql)  # on libpq itself: psycopg's cursor was most of a probe's CPU
            finally:
                watchdog.disarm(ticket)
        finally:
            if timer is not None:
                watchdog.disarm(timer)

    def _overdue(self, alias: str) -> bool:
        """The probe's first stage (on the watchdog's thread): the node is suspect; the cut stays armed."""
        try:
            self._suspected(alias)
        except Exception:  # the hedge's bug must not cut the probe now: the cut at the deadline stays armed
            logger.exception("hedging the reads on suspect node %s failed", alias)
        return True

    @staticmethod
    def _suspected(alias: str) -> None:
        hedged = watchdog.cut_rerunnable(alias)
        if hedged:
            logger.info(
                "%s is slow to answer its probe: %d read(s) in flight there run again elsewhere",
                alias,
                hedged,
                extra={"event": "db_reads_hedged", "node": alias, "hedged": hedged},
            )

    def _drop(self, alias: str, purpose: str = "probe") -> None:
        with self._connections_lock:
            conn = self._connections.pop((purpose, alias), None)
        if conn is not None:
            conn.close()

    def _probe(self, alias: str) -> None:
        self.nodes.probe_begun(alias)
        started = time.monotonic()
        freezes = watchdog.freezes
        try:
            if alias == PRIMARY:
                in_recovery, lsn = self._query(alias, PRIMARY_PROBE)[0]
                if in_recovery:
                    self._drop(alias)
                    self.nodes.mark_down(alias, "the primary address leads to a read-only node")
                    return
                self.primary_lsn = lsn_to_int(lsn)
                self.nodes.record_probe(
                    alias,
                    in_recovery=False,
                    lag_seconds=0.0,
                    lag_bytes=0,
                    replay_lsn=self.primary_lsn,
                    latency=self._latency(started, freezes),
                )
            else:
                in_recovery, replay, received, lag_seconds = self._query(alias, REPLICA_PROBE)[0]
                latency = self._latency(started, freezes)
                replay_lsn = lsn_to_int(replay)
                reference = self.primary_lsn or lsn_to_int(received)
                lag_bytes = max(0, reference - replay_lsn) if reference is not None and replay_lsn is not None else None
                self.nodes.record_probe(
                    alias,
                    in_recovery=bool(in_recovery),
                    lag_seconds=float(lag_seconds),
                    lag_bytes=lag_bytes,
                    replay_lsn=replay_lsn,
                    latency=latency,
                )
        except psycopg.Error as exc:
            self._drop(alias)
            reason: BaseException | str = exc
            if time.monotonic() - started >= self.deadline:  # cut off at the deadline: the node hangs
                reason = f"timeout: no answer to the probe within {self.deadline:g}s"
            self.nodes.mark_down(alias, reason)
        finally:
            self.nodes.probe_ended(alias)
            self.probes += 1

    @staticmethod
    def _latency(started: float, freezes: int) -> float | None:
        """The probe's round trip; None when this process was frozen meanwhile (the freeze is not the node's)."""
        return None if watchdog.freezes != freezes else time.monotonic() - started

    def _refresh_controls(self) -> None:
        """The switches from the primary, else from a replica: obeyed even while the primary is down."""
        for alias in [PRIMARY, *self.nodes.replica_aliases]:
            if not self.nodes.state(alias).reachable:
                continue
            try:
                controls_replace(self._query(alias, CONTROLS_QUERY, purpose="controls"))
                return
            except psycopg.errors.UndefinedTable:
                return  # not migrated yet: no switches
            except psycopg.Error as exc:
                logger.info("could not read operator controls from %s: %s", alias, exc)
                self._drop(alias, "controls")


_monitor: NodeMonitor | None = None
_monitor_lock = threading.Lock()


def monitor_start() -> NodeMonitor | None:
    """Start this process's monitor once (not in the seed-style naive mode, nor when settings turn it off)."""
    global _monitor
    if _monitor is not None or not settings.BULWARK_DB_MONITOR:
        return _monitor
    with _monitor_lock:
        if _monitor is None and not registry().naive:
            _monitor = NodeMonitor(registry())
            _monitor.start()
    return _monitor
