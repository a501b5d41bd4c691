"""The per-process database monitor: probes every node each second and refreshes the operator switches.

Other areas hand it work that waits for the primary (:func:`monitor_task_register`, e.g. the refresh tokens
blacklisted during an outage): it runs each round in which the primary answered, on this thread.

Each node gets one dedicated autocommit connection (not Django's), re-opened after a failure. A probe
is bounded by the connect timeout and the query watchdog, so a hung node delays only this thread.
A probe that succeeds closes the node's breaker; one that fails opens it. Lag is measured on the
replica itself (received vs replayed WAL), so a dead primary does not make a current replica look
lagging.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections

from resilience.controls.state import controls_replace
from resilience.db.lsn import lsn_to_int
from resilience.db.nodes import PRIMARY, NodeRegistry, registry
from resilience.db.watchdog import watchdog

logger = logging.getLogger("resilience.db")

PROBE_INTERVAL_SECONDS = 1.0
PROBE_DEADLINE_SECONDS = 3.0

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


def monitor_task_register(task: Callable[[], None]) -> None:
    """Run ``task`` on the monitor's thread after every probe round in which the primary answered."""
    if task not in _primary_tasks:
        _primary_tasks.append(task)


class NodeMonitor:
    def __init__(self, nodes: NodeRegistry, interval: float = PROBE_INTERVAL_SECONDS) -> None:
        self.nodes = nodes
        self.interval = interval
        self._connections: dict[str, psycopg.Connection] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-node-monitor", daemon=True)
        self.primary_lsn: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=PROBE_DEADLINE_SECONDS + 5)
        self.close()

    def close(self) -> None:
        """Close the probe connections (a monitor used for one ``probe_all`` without its thread)."""
        for alias in list(self._connections):
            self._drop(alias)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_all()
            if self.nodes.primary_available():
                self.run_primary_tasks()
            self._stop.wait(self.interval)

    def run_primary_tasks(self) -> None:
        for task in list(_primary_tasks):
            try:
                task()
            except Exception:
                logger.exception("monitor task %s failed", getattr(task, "__qualname__", task))

    def probe_all(self) -> None:
        self.primary_lsn = None
        for alias in [PRIMARY, *self.nodes.replica_aliases]:
            self._probe(alias)
        self._refresh_controls()

    def _connection(self, alias: str) -> psycopg.Connection:
        conn = self._connections.get(alias)
        if conn is None or conn.closed or conn.broken:
            params = connections[alias].get_connection_params()
            conn = psycopg.connect(**params, autocommit=True)
            self._connections[alias] = conn
        return conn

    def _query(self, alias: str, sql: str) -> list[tuple[Any, ...]]:
        conn = self._connection(alias)
        ticket = watchdog.arm(conn.pgconn.socket, PROBE_DEADLINE_SECONDS, f"{alias} (probe)")
        try:
            return conn.execute(sql).fetchall()
        finally:
            watchdog.disarm(ticket)

    def _drop(self, alias: str) -> None:
        conn = self._connections.pop(alias, None)
        if conn is not None:
            conn.close()

    def _probe(self, alias: str) -> None:
        try:
            if alias == PRIMARY:
                in_recovery, lsn = self._query(alias, PRIMARY_PROBE)[0]
                if in_recovery:
                    self._drop(alias)
                    self.nodes.mark_down(alias, "the primary address leads to a read-only node")
                    return
                self.primary_lsn = lsn_to_int(lsn)
                self.nodes.record_probe(
                    alias, in_recovery=False, lag_seconds=0.0, lag_bytes=0, replay_lsn=self.primary_lsn
                )
            else:
                in_recovery, replay, received, lag_seconds = self._query(alias, REPLICA_PROBE)[0]
                replay_lsn = lsn_to_int(replay)
                reference = self.primary_lsn or lsn_to_int(received)
                lag_bytes = max(0, reference - replay_lsn) if reference is not None and replay_lsn is not None else None
                self.nodes.record_probe(
                    alias,
                    in_recovery=bool(in_recovery),
                    lag_seconds=float(lag_seconds),
                    lag_bytes=lag_bytes,
                    replay_lsn=replay_lsn,
                )
        except psycopg.Error as exc:
            self._drop(alias)
            self.nodes.mark_down(alias, exc)

    def _refresh_controls(self) -> None:
        """The switches from the primary, else from a replica: obeyed even while the primary is down."""
        for alias in [PRIMARY, *self.nodes.replica_aliases]:
            if alias not in self._connections or not self.nodes.state(alias).reachable:
                continue
            try:
                controls_replace(self._query(alias, CONTROLS_QUERY))
                return
            except psycopg.errors.UndefinedTable:
                return  # not migrated yet: no switches
            except psycopg.Error as exc:
                logger.info("could not read operator controls from %s: %s", alias, exc)
                self._drop(alias)


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
