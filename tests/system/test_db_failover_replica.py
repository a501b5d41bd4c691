"""The replica fails under load (kill -9, or the whole postmaster family SIGSTOPped): no GET fails, none hangs,
reads fall back to the primary at normal speed, and the replica rejoins the rotation once it is back.

Real processes: a throwaway devstack per test and gunicorn with 2 workers; see tests/system/dbfailover.py.
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests.system.dbfailover import (
    REPLICA_ALIAS,
    Deployment,
    GetLoad,
    assert_no_server_errors,
    full_log,
    poll,
    product_ids,
)

pytestmark = pytest.mark.system

QUERY_TIMEOUT = 3  # DB_QUERY_TIMEOUT for the hang test: the client-side deadline on a query
HANG_SECONDS = 10
SETTLED_WINDOW = 3  # the last seconds of the hang, when every worker has skipped the replica for a while
MAX_GET_SECONDS = 2.0  # no GET through a hang waits longer (the goal, reported by bench/failover: 1 s)
LOAD_SECONDS = 10


def test_replica_killed_no_failed_get_then_replica_rejoins(tmp_path) -> None:
    with Deployment("fo-replica-kill", 62420, tmp_path) as deployment:
        server = deployment.serve()
        ids = product_ids(server.url)
        assert deployment.replica_serves_reads(server, ids) > 0  # reads do go to the replica to begin with

        with GetLoad(server.url, ids) as load:
            time.sleep(2)
            killed_at = time.monotonic()
            deployment.stack.kill("replica")
            time.sleep(5)
            restarted_at = time.monotonic()
            deployment.stack.start("replica")
            poll(lambda: f"database node up: {REPLICA_ALIAS}" in full_log(server), timeout=15)
            time.sleep(1)

        outage = load.between(killed_at, restarted_at)
        load.assert_all_ok(min_requests=50)
        assert len(outage) >= 20, f"too few GETs while the replica was down: {load.summary(outage)}"
        log = full_log(server)
        assert f"database node down: {REPLICA_ALIAS}" in log
        # One outage, one transition each way per worker (2): no flapping once the replica is back.
        assert log.count(f"database node down: {REPLICA_ALIAS}") <= 2, log.count(f"database node down: {REPLICA_ALIAS}")
        # Back in rotation: cookie-less reads are served by the replica again.
        _, waited = poll(lambda: deployment.replica_serves_reads(server, ids) > 0, timeout=10, interval=0.5)
        assert_no_server_errors(server)
        print(f"replica down: {load.summary(outage)}; all: {load.summary()}; replica serving again after {waited:.1f}s")


def test_replica_hung_no_failed_get_none_hanging_then_normal_speed(tmp_path) -> None:
    with Deployment("fo-replica-hang", 62430, tmp_path) as deployment:
        server = deployment.serve(DB_QUERY_TIMEOUT=f"{QUERY_TIMEOUT}s")
        ids = product_ids(server.url)
        assert deployment.replica_serves_reads(server, ids) > 0  # open replica connections in the workers

        with GetLoad(server.url, ids) as load:
            time.sleep(2)
            hung_at = time.monotonic()
            deployment.stack.hang("replica")
            try:
                time.sleep(HANG_SECONDS)
            finally:
                resumed_at = time.monotonic()
                deployment.stack.resume("replica")
            poll(lambda: f"database node up: {REPLICA_ALIAS}" in full_log(server), timeout=15)
            time.sleep(1)

        hang = load.between(hung_at, resumed_at)
        settled = load.between(resumed_at - SETTLED_WINDOW, resumed_at)
        load.assert_all_ok(min_requests=50)
        assert len(hang) >= 20, f"too few GETs while the replica was hung: {load.summary(hang)}"
        # None waits long on the hung replica: its probe is overdue within a fraction of a second (no new read goes
        # there), and past the probe's deadline the queries on it are cut off and run again on the primary. The
        # bench reports the 1 s goal; this bound is wide on purpose (a shared 2-core machine).
        slowest = max(hang, key=lambda sample: sample.elapsed)
        assert slowest.elapsed < MAX_GET_SECONDS, slowest
        # ...and once the replica is known to be down it costs nothing: no timeout paid per request.
        assert len(settled) >= 10, load.summary(settled)
        assert statistics.median(s.elapsed for s in settled) < 1.0, load.summary(settled)
        log = full_log(server)
        assert f"database node down: {REPLICA_ALIAS}" in log
        assert log.count(f"database node down: {REPLICA_ALIAS}") <= 2, log.count(f"database node down: {REPLICA_ALIAS}")
        assert_no_server_errors(server)
        print(f"hang: {load.summary(hang)}; last {SETTLED_WINDOW}s of it: {load.summary(settled)}")


def test_a_busy_but_healthy_replica_under_load_is_neither_marked_down_nor_slow(tmp_path) -> None:
    """Many clients at once on 2 workers: the probes (0.5 s deadline) never take a healthy node for a hung one."""
    with Deployment("fo-busy", 62470, tmp_path) as deployment:
        server = deployment.serve()
        ids = product_ids(server.url)
        with GetLoad(server.url, ids, threads=16, pause=0.0) as load:
            time.sleep(LOAD_SECONDS)
        load.assert_all_ok(min_requests=200)
        log = full_log(server)
        for flap in ("database node down", "db_replica_slow", "query deadline passed"):
            assert flap not in log, log[log.index(flap) - 500 : log.index(flap) + 500]
        assert deployment.replica_serves_reads(server, ids) > 0  # the replica stayed in rotation
        assert_no_server_errors(server)
        print(f"busy: {load.summary()}")
