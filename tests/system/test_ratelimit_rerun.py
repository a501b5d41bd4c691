"""A request the database middleware runs again (it met a replica that had just died) is counted once by the
rate limiter: real processes, a throwaway devstack (port base 62750) and gunicorn with 1 worker (4 threads)
counting in that stack's Redis.

The replica is killed while the worker's threads hold open connections to it; the next read meets the dead
connection, is re-run on the primary (logged with its request id) and answers 200. The client's
``RateLimit-Remaining`` goes down by exactly one per request across it. The worker's monitor may notice the
kill first (it probes ten times a second): then nothing is re-run, the replica is brought back and the kill tried
again.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.system.dbfailover import (
    REPLICA_ALIAS,
    REQUEST_TIMEOUT,
    Deployment,
    assert_no_server_errors,
    full_log,
    log_records,
    poll,
)

pytestmark = pytest.mark.system

ATTEMPTS = 12  # the monitor (10 probes a second) often notices a kill first, more so on a loaded machine
BACK = f"database node up: {REPLICA_ALIAS}"


def _get(url: str, request_id: str) -> requests.Response:
    return requests.get(f"{url}/api/products/", headers={"X-Request-ID": request_id}, timeout=REQUEST_TIMEOUT)


def test_a_request_run_again_after_a_replica_died_is_counted_once(tmp_path) -> None:
    with Deployment("rl-rerun", 62750, tmp_path) as deployment:
        server = deployment.serve(WEB_CONCURRENCY="1", RATELIMIT_ENABLED="true", RATELIMIT_API="100000/h")
        for attempt in range(ATTEMPTS):
            with requests.Session() as warm:  # every thread of the worker opens its replica connection
                for _ in range(12):
                    assert warm.get(f"{server.url}/api/products/", timeout=REQUEST_TIMEOUT).status_code == 200
            before = _get(server.url, f"before-{attempt}")
            deployment.stack.kill("replica")
            rerun_id = f"rerun-{attempt}-{uuid.uuid4().hex[:6]}"
            rerun = _get(server.url, rerun_id)
            after = _get(server.url, f"after-{attempt}")
            assert [r.status_code for r in (before, rerun, after)] == [200, 200, 200], rerun.text
            remaining = [int(r.headers["RateLimit-Remaining"]) for r in (before, rerun, after)]
            was_rerun = any(
                record.get("request_id") == rerun_id and record["message"].startswith("re-running GET /api/products/")
                for record in log_records(server)
            )
            if was_rerun:
                assert remaining == [remaining[0], remaining[0] - 1, remaining[0] - 2], remaining
                break
            deployment.stack.start("replica")  # the monitor was first: try again
            poll(lambda seen=attempt: full_log(server).count(BACK) > seen, timeout=15)
        else:
            pytest.fail(f"no request met the dead replica in {ATTEMPTS} attempts (the monitor always noticed first)")
        assert_no_server_errors(server)
