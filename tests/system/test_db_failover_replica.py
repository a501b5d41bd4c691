"""The replica fails under load (kill -9, or the whole postmaster family SIGSTOPped): no GET fails, none hangs,
reads fall back to the primary at normal speed, and the replica rejoins the rotation once it is back.

Real processes: a throwaway devstack per test and gunicorn with 2 workers; see tests/system/dbfailover.py.
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests.system.dbfailover import (
    CONNECT_TIMEOUT,
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
        # None hangs past connect timeout + query deadline + a few seconds...
        slowest = max(hang, key=lambda sample: sample.elapsed)
        assert slowest.elapsed < CONNECT_TIMEOUT + QUERY_TIMEOUT + 7, slowest
        # ...and once the replica is known to be down it costs nothing: no timeout paid per request.
        assert len(settled) >= 10, load.summary(settled)
        assert statistics.median(s.elapsed for s in settled) < 1.0, load.summary(settled)
        log = full_log(server)
        assert f"database node down: {REPLICA_ALIAS}" in log
        assert log.count(f"database node down: {REPLICA_ALIAS}") <= 2, log.count(f"database node down: {REPLICA_ALIAS}")
        assert_no_server_errors(server)
        print(f"hang: {load.summary(hang)}; last {SETTLED_WINDOW}s of it: {load.summary(settled)}")
