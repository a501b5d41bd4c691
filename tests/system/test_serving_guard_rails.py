"""Bulkheads and time budgets in a real gunicorn worker, against a catalog dependency that is stuck.

The stuck dependency is a real one: an operator's migration holds ``LOCK TABLE shop_category IN ACCESS EXCLUSIVE
MODE`` in an open transaction on the primary (the streaming replica replays the lock, so reads of the table
wait there too). Every product read waits on it. Then:

- the catalog bulkhead admits ``SERVING_LIMIT_CATALOG`` of a burst of product reads; the rest are refused at
  once with ``503 overloaded`` and ``Retry-After``;
- the admitted ones are cut off at ``SERVING_BUDGET_CATALOG`` with ``504 request_timeout`` (a PostgreSQL cancel:
  the node stays healthy, the worker's threads come back);
- meanwhile health probes, log-ins and checkout answer as usual, and ``/metrics`` counts it all by class;
- a checkout whose payment gateway hangs answers within its own budget, the order kept ``pending_payment``.

Real processes: a throwaway devstack (port base 62840), one gunicorn worker, the fake payment
gateway. See tests/system/dbfailover.py.
"""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from devstack.fake_gateway import FakeGateway
from tests.system.dbfailover import (
    Deployment,
    assert_no_server_errors,
    customer_logged_in,
    full_log,
    log_records,
    poll,
    product_ids,
)

pytestmark = pytest.mark.system

PORT_BASE = 62840
CATALOG_LIMIT = 2
CATALOG_BUDGET = 2  # seconds
CHECKOUT_BUDGET = 3
GATEWAY_TIMEOUT = 8  # longer than the checkout budget: the budget cuts the call, not the gateway's timeout
BURST = 8
SLACK = 2.0  # seconds over a budget a cut request may take (the cancel round trip, a busy 2-core machine)


def get(url: str, **kwargs: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=30, **kwargs)
    return response, time.monotonic() - started


def replica_holds_the_lock(deployment: Deployment) -> bool:
    sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' "
        "AND relation = 'shop_category'::regclass"
    )
    return deployment.stack.psql("replica", sql) == "1"


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}{{{re.escape(selector)}}} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.timeout(240)
def test_a_stuck_catalog_is_shed_and_cut_while_probes_login_and_checkout_answer(tmp_path) -> None:
    with FakeGateway(hang_seconds=30) as gateway, Deployment("serving-guards", PORT_BASE, tmp_path) as deployment:
        server = deployment.serve(
            WEB_CONCURRENCY="1",
            SERVING_LIMIT_CATALOG=str(CATALOG_LIMIT),
            SERVING_BUDGET_CATALOG=str(CATALOG_BUDGET),
            SERVING_BUDGET_CHECKOUT=str(CHECKOUT_BUDGET),
            PAYMENT_GATEWAY_URL=gateway.url,
            PAYMENT_GATEWAY_TIMEOUT=str(GATEWAY_TIMEOUT),
        )
        base = server.url
        ids = product_ids(base)
        customer = customer_logged_in(base, "guard")

        migration = psycopg.connect(deployment.stack_env["DATABASE_URL"], autocommit=False)
        try:
            migration.execute("LOCK TABLE shop_category IN ACCESS EXCLUSIVE MODE")
            # The lock's WAL record sits in the primary's WAL buffers until a commit after it is flushed (the stack
            # commits asynchronously: the WAL writer flushes within its delay); then the replica replays it.
            deployment.stack.psql("primary", "SELECT txid_current()")
            poll(lambda: replica_holds_the_lock(deployment), 10, interval=0.1)
            burst_started = time.monotonic()
            with ThreadPoolExecutor(BURST) as pool:
                burst = list(pool.map(lambda _: get(f"{base}/api/products/"), range(BURST)))
                # While the admitted reads wait on the lock: the other classes and the probes are served.
                time.sleep(0.3)
                probe, probe_took = get(f"{base}/health/ready")
                me, me_took = get(f"{base}/api/auth/me/", headers=customer.auth)
            burst_took = time.monotonic() - burst_started
        finally:
            migration.rollback()
            migration.close()

        statuses = sorted(response.status_code for response, _ in burst)
        assert statuses == [503] * (BURST - CATALOG_LIMIT) + [504] * CATALOG_LIMIT, statuses
        for response, took in burst:
            error = response.json()["error"]
            assert response.headers["X-Traffic-Class"] == "catalog"
            assert error["request_id"] == response.headers["X-Request-ID"]
            if response.status_code == 503:
                assert error["code"] == "overloaded" and response.headers["Retry-After"] == "1"
                assert took < 1.0, took  # at once, not after a wait
            else:
                assert error["code"] == "request_timeout"
                assert error["detail"] == {"traffic_class": "catalog", "budget_seconds": CATALOG_BUDGET}
                assert CATALOG_BUDGET - 0.2 <= took < CATALOG_BUDGET + SLACK, took
        assert burst_took < CATALOG_BUDGET + SLACK
        assert probe.status_code == 200 and probe.headers["X-Traffic-Class"] == "ops"
        assert me.status_code == 200 and me.headers["X-Traffic-Class"] == "auth"
        assert probe_took < 1.0 and me_took < 1.0, (probe_took, me_took)

        # The lock is gone: the catalog reads again, and the database was never marked down for the cut reads.
        response, _ = get(f"{base}/api/products/{ids[0]}/")
        assert response.status_code == 200
        health = requests.get(f"{base}/health", timeout=10).json()
        assert health["spofs"]["status"]["database"]["healthy"] is True
        assert "db_node_down" not in full_log(server)

        # A checkout whose gateway hangs: cut at its budget, the order kept for a later payment.
        gateway.set_mode("hang")
        requests.post(
            f"{base}/api/cart/items/", json={"product_id": ids[1], "quantity": 1}, headers=customer.auth, timeout=10
        ).raise_for_status()
        started = time.monotonic()
        order = requests.post(
            f"{base}/api/orders/", headers={**customer.auth, "Idempotency-Key": uuid.uuid4().hex}, timeout=30
        )
        took = time.monotonic() - started
        gateway.set_mode("succeed")
        assert order.status_code == 201, order.text
        assert order.json()["status"] == "pending_payment"
        assert order.headers["X-Traffic-Class"] == "checkout"
        assert took < CHECKOUT_BUDGET + SLACK, took

        scrape = requests.get(f"{base}/metrics", timeout=10).text
        assert metric(scrape, "bulwark_serving_requests_total", traffic_class="catalog", outcome="overloaded") >= 6
        assert metric(scrape, "bulwark_serving_requests_total", traffic_class="catalog", outcome="timeout") >= 2
        assert metric(scrape, "bulwark_serving_limit", traffic_class="catalog") == CATALOG_LIMIT
        assert metric(scrape, "bulwark_serving_in_flight", traffic_class="catalog") == 0

        records = log_records(server)
        cut = [r for r in records if r.get("event") == "request" and r.get("status") == 504]
        assert len(cut) == CATALOG_LIMIT and {r["traffic_class"] for r in cut} == {"catalog"}
        assert any(r.get("event") == "serving_shed" and r["traffic_class"] == "catalog" for r in records)
        assert re.search(r"GET /api/products/ HTTP/1.1\\?\" 503 .* class=catalog", full_log(server))
        assert_no_server_errors(server)
