"""The node monitor against the real test nodes (primary, streaming replica): what a probe records, a node that
refuses connections or hangs (a port where nothing listens / nothing answers), the primary address leading to a
read-only node, and the operator switches it reads for the process."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connections

import resilience.db.monitor as monitor_module
from resilience.controls.models import OperatorControl
from resilience.controls.state import DRAIN_PREFIX, controls_replace, switches
from resilience.db.lsn import lsn_to_int
from resilience.db.monitor import NodeMonitor, monitor_start
from resilience.db.nodes import PRIMARY, NodeRegistry, registry, reset_registry
from tests.helpers import dead, poll

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),  # dead() closes connections: no test transaction
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]
SWITCH = f"{DRAIN_PREFIX}replica_9"  # a switch with no effect here (there is no replica_9)


def nodes() -> NodeRegistry:
    return NodeRegistry([REPLICA], max_lag_seconds=settings.BULWARK_CONFIG.db_replica_max_lag.total_seconds())


def probed(registry_: NodeRegistry) -> NodeMonitor:
    """One round of probes by a monitor of its own (no thread), its connections closed afterwards."""
    monitor = NodeMonitor(registry_)
    try:
        monitor.probe_all()
    finally:
        monitor.close()
    return monitor


def query(alias: str, sql: str):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def replica_caught_up() -> bool:
    return query(REPLICA, "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()")[0]


@contextmanager
def address_of(alias: str, node: str) -> Iterator[None]:
    """``alias`` connects to ``node``'s address (e.g. the primary's address now leads to the replica)."""
    target, source = connections[alias], connections[node].settings_dict
    target.close()
    saved = {key: target.settings_dict[key] for key in ("HOST", "PORT")}
    target.settings_dict.update(HOST=source["HOST"], PORT=source["PORT"])
    try:
        yield
    finally:
        target.settings_dict.update(saved)
        target.close()


@contextmanager
def hung(alias: str) -> Iterator[None]:
    """``alias`` points at a port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        node = connections[alias]
        node.close()
        original = node.settings_dict["HOST"], node.settings_dict["PORT"]
        node.settings_dict.update(HOST="127.0.0.1", PORT=str(listener.getsockname()[1]))
        try:
            yield
        finally:
            node.settings_dict.update(HOST=original[0], PORT=original[1])
            node.close()


def test_a_probe_records_each_nodes_role_position_and_lag() -> None:
    written = lsn_to_int(query(PRIMARY, "SELECT pg_current_wal_insert_lsn()::text")[0])
    registry_ = nodes()
    monitor = probed(registry_)
    primary, replica = registry_.state(PRIMARY), registry_.state(REPLICA)
    assert primary.reachable and primary.in_recovery is False and primary.probed_at is not None
    assert monitor.primary_lsn is not None and monitor.primary_lsn >= written
    assert primary.replay_lsn == monitor.primary_lsn and primary.lag_bytes == 0
    assert replica.reachable and replica.in_recovery is True and replica.probed_at is not None
    assert replica.replay_lsn is not None and replica.replay_lsn <= monitor.primary_lsn + 1024**2
    assert replica.lag_bytes is not None and replica.lag_bytes >= 0 and replica.lag_seconds >= 0
    assert registry_.snapshot()[REPLICA]["role"] == "replica" and registry_.readable_replicas() == [REPLICA]


def test_a_refused_node_is_marked_down_and_the_next_probe_that_answers_brings_it_back() -> None:
    registry_ = nodes()
    with dead(REPLICA):
        probed(registry_)
    down = registry_.state(REPLICA)
    assert not down.reachable and down.breaker == "open" and down.last_error
    assert registry_.readable_replicas() == []  # no read goes there meanwhile
    assert registry_.state(PRIMARY).reachable  # the other nodes are probed as usual
    probed(registry_)
    assert registry_.state(REPLICA).reachable and registry_.readable_replicas() == [REPLICA]


def test_a_dead_primary_does_not_make_a_current_replica_look_lagging() -> None:
    poll(replica_caught_up, timeout=10, interval=0.05)
    registry_ = nodes()
    with dead(PRIMARY):
        probed(registry_)
    assert not registry_.state(PRIMARY).reachable
    replica = registry_.state(REPLICA)
    # Lag is what the replica has received but not replayed, not the time since its last replayed transaction
    # (which grows while nothing is written, or while the primary is down).
    assert replica.reachable and replica.lag_seconds == 0 and replica.lag_bytes == 0, replica
    assert registry_.readable_replicas() == [REPLICA]


def test_the_primary_address_leading_to_a_read_only_node_marks_the_primary_down() -> None:
    registry_ = nodes()
    with address_of(PRIMARY, REPLICA):  # a failover moved the address, or the old primary came back demoted
        probed(registry_)
    primary = registry_.state(PRIMARY)
    assert not primary.reachable and primary.breaker == "open"
    assert primary.last_error == "the primary address leads to a read-only node"  # said as such, not an SQL error
    assert registry_.state(REPLICA).reachable


def test_a_hung_node_costs_the_probe_round_one_connect_timeout() -> None:
    connect_timeout = float(settings.DATABASES[REPLICA]["OPTIONS"]["connect_timeout"])
    registry_ = nodes()
    started = time.monotonic()
    with hung(REPLICA):
        probed(registry_)
    assert time.monotonic() - started < connect_timeout + 5  # bounded: the round goes on without it
    assert not registry_.state(REPLICA).reachable
    assert registry_.state(PRIMARY).reachable


def test_the_switches_are_read_from_the_primary_and_from_a_replica_while_the_primary_is_down() -> None:
    OperatorControl.objects.create(key=SWITCH, enabled=True, reason="monitor test")  # as another process would
    controls_replace([])
    probed(nodes())
    assert switches() == {SWITCH: True}

    poll(lambda: OperatorControl.objects.using(REPLICA).filter(key=SWITCH).exists(), timeout=10, interval=0.05)
    controls_replace([])
    registry_ = nodes()
    with dead(PRIMARY):
        probed(registry_)
    assert not registry_.state(PRIMARY).reachable
    assert switches() == {SWITCH: True}  # obeyed even while the primary is down


def test_the_monitor_thread_probes_every_interval_until_stopped() -> None:
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    before = query(PRIMARY, sessions)[0]
    registry_ = nodes()
    monitor = NodeMonitor(registry_, interval=0.05)
    monitor.start()
    try:
        poll(lambda: registry_.state(REPLICA).probed_at is not None, timeout=10, interval=0.05)
        first = registry_.state(PRIMARY).probed_at
        poll(lambda: registry_.state(PRIMARY).probed_at != first, timeout=10, interval=0.05)  # and again
    finally:
        monitor.stop()
    last = registry_.state(PRIMARY).probed_at
    time.sleep(0.3)  # several intervals: nothing is supposed to happen
    assert registry_.state(PRIMARY).probed_at == last
    assert query(PRIMARY, sessions)[0] == before  # its probe connection is closed


def test_monitor_start_runs_one_monitor_per_process_unless_turned_off(settings, monkeypatch) -> None:
    monkeypatch.setattr(monitor_module, "_monitor", None)  # this process's monitor: restored afterwards
    settings.BULWARK_DB_MONITOR = False
    assert monitor_start() is None
    settings.BULWARK_DB_MONITOR = True
    config = settings.BULWARK_CONFIG
    settings.BULWARK_CONFIG = dataclasses.replace(config, db_failover_mode="naive")
    reset_registry()
    assert monitor_start() is None  # the seed-style naive mode has no monitor
    settings.BULWARK_CONFIG = config
    reset_registry()
    started = monitor_start()
    assert started is not None
    try:
        assert monitor_start() is started
        # It runs, and on this process's registry.
        poll(lambda: registry().state(PRIMARY).probed_at is not None, timeout=10, interval=0.05)
    finally:
        started.stop()


def test_a_probe_connection_ended_by_the_server_is_replaced_without_marking_the_node_down() -> None:
    """A server-side idle timeout, a proxy restart or a long freeze of this process ends the monitor's kept
    connection: the probe asks again on a new one, and the node stays up."""
    registry_ = nodes()
    monitor = NodeMonitor(registry_)
    try:
        monitor.probe_all()
        kept = monitor._connections[("probe", PRIMARY)].info.backend_pid
        query(PRIMARY, f"SELECT pg_terminate_backend({kept})")
        monitor.probe_all()
        assert registry_.state(PRIMARY).reachable, registry_.state(PRIMARY).last_error
        assert monitor._connections[("probe", PRIMARY)].info.backend_pid != kept
    finally:
        monitor.close()


def test_a_probe_refused_on_a_new_connection_still_marks_the_node_down_at_once() -> None:
    registry_ = nodes()
    monitor = NodeMonitor(registry_)
    try:
        monitor.probe_all()
        kept = monitor._connections[("probe", PRIMARY)].info.backend_pid
        query(PRIMARY, f"SELECT pg_terminate_backend({kept})")  # the kept connection fails: a new one is refused
        with dead(PRIMARY):
            started = time.monotonic()
            monitor.probe_all()
            assert not registry_.state(PRIMARY).reachable
            assert time.monotonic() - started < 1.0
    finally:
        monitor.close()
