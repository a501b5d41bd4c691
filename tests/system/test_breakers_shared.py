"""A hung payment gateway costs the fleet about one breaker threshold of slow checkouts, not one per worker:
gunicorn with 3 workers shares the breaker's failures, its open state and its one half-open trial through Redis.

Real processes: a throwaway devstack (with Redis), gunicorn (3 workers x 4 threads), the fake gateway.
"""

from __future__ import annotations

import itertools

import pytest

from tests.system.dbfailover import Deployment, assert_no_server_errors, customer_logged_in, full_log, product_ids
from tests.system.test_payments_gateway import (
    CONNECT_TIMEOUT,
    FAILURES,
    OPENED,
    READ_TIMEOUT,
    Checkout,
    checkout,
    gateway,  # noqa: F401 - the fixture
    gateway_env,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

WORKERS = 3
SEQUENTIAL = 12


def test_a_hung_gateway_makes_at_most_threshold_plus_one_checkouts_wait_across_three_workers(
    tmp_path,
    gateway,  # noqa: F811 - the fixture imported above
) -> None:
    with Deployment("pay-shared", 62740, tmp_path) as deployment:
        server = deployment.serve(WEB_CONCURRENCY=str(WORKERS), **gateway_env(gateway))
        products = itertools.cycle(product_ids(server.url))
        customer = customer_logged_in(server.url, "fleet")
        paid = checkout(server.url, customer, next(products))
        assert paid.status == 201 and paid.order_status == "paid", paid.describe()

        gateway.set_mode("hang")
        results: list[Checkout] = [checkout(server.url, customer, next(products)) for _ in range(SEQUENTIAL)]
        for result in results:
            assert result.status == 201 and result.order_status == "pending_payment", result.describe()
            assert result.elapsed < CONNECT_TIMEOUT + READ_TIMEOUT + 3, result.describe()
        waited = [result for result in results if result.elapsed >= READ_TIMEOUT * 0.9]
        assert len(waited) <= FAILURES + 1, [result.describe() for result in results]
        assert len(waited) >= FAILURES, "the breaker opened before the threshold was reached"

        log = full_log(server)
        print(f"{len(waited)} of {SEQUENTIAL} checkouts waited on the hung gateway; log lines: {log.count(OPENED)}")
        assert "opened by another worker" in log, log[-3000:]
        assert log.count(OPENED) <= WORKERS  # each worker opens once: no flapping
        assert_no_server_errors(server)
