"""The payment gateway failing, hanging and declining under checkout load, with real processes: a throwaway
devstack, gunicorn (2 workers x 4 threads) and the fake gateway (``python -m devstack.fake_gateway``).

- Hanging gateway: every checkout answers 201 ``pending_payment``; the breaker opens for the fleet and every
  worker follows (logged); once open, no checkout waits on the gateway. The gateway back, ``retry_payments``
  pays every order, and nothing is charged twice -- not even the charges the hung gateway processed after the
  shop had given up on them.
- Failing (500), declining, and an operator forcing the breaker closed / open / automatic, obeyed by every
  worker within 2 s.

Stacks on ports 62720 and 62730 (see tests/system/dbfailover.py for why above 61000).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.system.conftest import ROOT, free_port, process_stop
from tests.system.dbfailover import (
    REQUEST_TIMEOUT,
    Customer,
    Deployment,
    assert_no_server_errors,
    customer_logged_in,
    full_log,
    poll,
    product_ids,
    run_manage,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

CONNECT_TIMEOUT, READ_TIMEOUT = 1, 2  # PAYMENT_GATEWAY_CONNECT_TIMEOUT, PAYMENT_GATEWAY_TIMEOUT (seconds)
FAILURES = 3  # PAYMENT_GATEWAY_BREAKER_FAILURES
WORKERS = 2
OBEYED_WITHIN = 2.0
OPENED = "circuit breaker payment_gateway: closed -> open"


class GatewayProcess:
    """``python -m devstack.fake_gateway`` on a free port, steered over its control endpoint."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            # A hung call is held until the mode changes (longer than any test): the gateway never drops it itself.
            [sys.executable, "-m", "devstack.fake_gateway", "--port", str(self.port), "--hang-seconds", "900"],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.state()
                return
            except requests.RequestException:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the fake gateway did not start:\n{log_path.read_text()}") from None
                time.sleep(0.1)

    def state(self) -> dict:
        return requests.get(f"{self.url}/_control", timeout=5).json()

    def set_mode(self, mode: str) -> None:
        assert requests.post(f"{self.url}/_control", json={"mode": mode}, timeout=5).json()["mode"] == mode

    def charges(self) -> list[dict]:
        return requests.get(f"{self.url}/_charges", timeout=5).json()["charges"]

    def stop(self) -> None:
        process_stop(self.process, self.log)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "fake_gateway.log")
    yield process
    process.stop()


def gateway_env(gateway: GatewayProcess) -> dict[str, str]:
    return {
        "PAYMENT_GATEWAY_URL": gateway.url,
        "PAYMENT_GATEWAY_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "PAYMENT_GATEWAY_TIMEOUT": str(READ_TIMEOUT),
        "PAYMENT_GATEWAY_BREAKER_FAILURES": str(FAILURES),
        "PAYMENT_GATEWAY_BREAKER_RESET": "10m",  # stays open for the whole test unless an operator says otherwise
    }


@dataclass(frozen=True)
class Checkout:
    status: int
    body: dict
    elapsed: float
    started: float

    @property
    def order_status(self) -> str:
        return self.body.get("status", "")

    def describe(self) -> str:
        return f"{self.status} in {self.elapsed:.2f}s: {str(self.body)[:300]}"


def checkout(base_url: str, customer: Customer, product_id: int) -> Checkout:
    """Put one unit in the cart and check out with an Idempotency-Key, on fresh connections (either worker)."""
    added = requests.post(
        f"{base_url}/api/cart/items/",
        json={"product_id": product_id, "quantity": 1},
        headers=customer.auth,
        timeout=REQUEST_TIMEOUT,
    )
    assert added.status_code == 201, added.text
    started = time.monotonic()
    response = requests.post(
        f"{base_url}/api/orders/",
        headers={**customer.auth, "Idempotency-Key": uuid.uuid4().hex},
        timeout=REQUEST_TIMEOUT,
    )
    return Checkout(response.status_code, response.json(), time.monotonic() - started, started)


def checkout_burst(base_url: str, customers: list[Customer], products: Iterator[int]) -> list[Checkout]:
    """One checkout per customer, all at once (each customer in its own thread)."""
    chosen = [next(products) for _ in customers]
    results: list[Checkout | BaseException] = [RuntimeError("no result")] * len(customers)

    def run(index: int) -> None:
        try:
            results[index] = checkout(base_url, customers[index], chosen[index])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(customers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT * 3)
    failed = [r for r in results if not isinstance(r, Checkout)]
    assert not failed, failed
    return results  # type: ignore[return-value]


def opened_count(server) -> int:
    return full_log(server).count(OPENED)


def order_statuses(base_url: str, customers: list[Customer]) -> dict[int, str]:
    statuses = {}
    for customer in customers:
        page = requests.get(f"{base_url}/api/orders/?page_size=100", headers=customer.auth, timeout=REQUEST_TIMEOUT)
        assert page.status_code == 200, page.text
        statuses.update({order["id"]: order["status"] for order in page.json()["results"]})
    return statuses


def assert_one_charge_per_order(gateway: GatewayProcess) -> None:
    references = [charge["reference"] for charge in gateway.charges()]
    assert len(references) == len(set(references)), sorted(references)


def control_set(deployment: Deployment, **switches: bool) -> float:
    deployment.control_set(**{f"breaker.payment_gateway.{key}": on for key, on in switches.items()})
    return time.monotonic()


def wait_obeyed(since: float) -> None:
    time.sleep(max(0.0, since + OBEYED_WITHIN - time.monotonic()))


def test_hanging_gateway_under_checkout_load_then_retry_payments_pays_once(tmp_path, gateway) -> None:
    with Deployment("pay-hang", 62720, tmp_path) as deployment:
        server = deployment.serve(**gateway_env(gateway))
        products = itertools.cycle(product_ids(server.url))
        customers = [customer_logged_in(server.url, "hang") for _ in range(6)]

        paid = checkout(server.url, customers[0], next(products))
        assert paid.status == 201 and paid.order_status == "paid", paid.describe()

        # The gateway hangs: checkouts keep coming back 201 pending_payment, each after at most one timeout,
        # until the breaker has opened (fleet-wide) and every worker has followed.
        calls_before_hang = gateway.state()["calls"]
        gateway.set_mode("hang")
        hung: list[Checkout] = []
        for _ in range(12):
            hung += checkout_burst(server.url, customers, products)
            if opened_count(server) >= WORKERS:
                break
        assert opened_count(server) == WORKERS, full_log(server)[-3000:]
        for result in hung:
            assert result.status == 201 and result.order_status == "pending_payment", result.describe()
            assert result.body["payment"]["status"] == "pending"
            assert result.elapsed < CONNECT_TIMEOUT + READ_TIMEOUT + 3, result.describe()

        # Open everywhere: nothing waits on the gateway any more, nothing reaches it.
        calls = gateway.state()["calls"]
        fast: list[Checkout] = []
        for _ in range(3):
            fast += checkout_burst(server.url, customers, products)
        for result in fast:
            assert result.status == 201 and result.order_status == "pending_payment", result.describe()
            assert result.elapsed < READ_TIMEOUT, result.describe()
        assert gateway.state()["calls"] == calls

        # The gateway is back. The hung requests it still held now go through (charged after the shop gave up);
        # retry_payments asks with the same keys: every order is paid, none twice.
        held = calls - calls_before_hang  # checkout only POSTs a charge, once per order: one held request each
        assert held >= FAILURES, (calls_before_hang, calls)  # the fleet failed that often before it opened
        gateway.set_mode("succeed")
        poll(lambda: gateway.state()["charges"] >= 1 + held, timeout=15, interval=0.1)  # every held one charged
        output = run_manage("retry_payments", env={**deployment.env, **gateway_env(gateway)})
        pending = len(hung) + len(fast)
        assert f"{pending} order(s) pending payment" in output, output
        assert f"{pending} paid, 0 declined" in output, output
        deployment.wait_replica_caught_up()
        statuses = order_statuses(server.url, customers)
        assert set(statuses.values()) == {"paid"}, statuses
        assert len(gateway.charges()) == len(statuses) == pending + 1
        assert_one_charge_per_order(gateway)

        again = run_manage("retry_payments", env={**deployment.env, **gateway_env(gateway)})
        assert "0 order(s) pending payment" in again
        assert len(gateway.charges()) == pending + 1
        assert_no_server_errors(server)


def test_failing_and_declining_gateway_and_operator_forcing_the_breaker(tmp_path, gateway) -> None:
    with Deployment("pay-fail", 62730, tmp_path) as deployment:
        server = deployment.serve(**gateway_env(gateway))
        ids = product_ids(server.url)
        products = itertools.cycle(ids)
        customers = [customer_logged_in(server.url, "fail") for _ in range(6)]

        # 500s: pending_payment, at once (no timeout involved), until both workers' breakers are open.
        gateway.set_mode("fail")
        failing: list[Checkout] = []
        for _ in range(12):
            failing += checkout_burst(server.url, customers, products)
            if opened_count(server) >= WORKERS:
                break
        assert opened_count(server) == WORKERS, full_log(server)[-3000:]
        assert {(r.status, r.order_status) for r in failing} == {(201, "pending_payment")}
        log = full_log(server)
        assert re.search(
            r'"level": "WARNING", "logger": "resilience\.breakers", "message": "circuit breaker payment_gateway: '
            r"closed -> open \(3 consecutive failures",
            log,
        ), log[-2000:]

        # Declines, with the breaker forced closed by an operator: every worker calls the gateway again within
        # 2 s; a decline is payment_failed, its stock returned, and it does not open anything.
        gateway.set_mode("decline")
        wait_obeyed(control_set(deployment, force_closed=True))
        deployment.wait_replica_caught_up()  # anonymous product reads go to the replica
        stock_before = {
            pid: requests.get(f"{server.url}/api/products/{pid}/", timeout=10).json()["stock"] for pid in ids
        }
        declined = checkout_burst(server.url, customers, products) + checkout_burst(server.url, customers, products)
        for result in declined:
            assert result.status == 201 and result.order_status == "payment_failed", result.describe()
            assert result.body["payment"]["status"] == "declined"
        deployment.wait_replica_caught_up()
        stock_after = {
            pid: requests.get(f"{server.url}/api/products/{pid}/", timeout=10).json()["stock"] for pid in ids
        }
        assert stock_after == stock_before

        # Forced open while the gateway works: within 2 s no worker calls it; orders wait, pending_payment.
        gateway.set_mode("succeed")
        wait_obeyed(control_set(deployment, force_open=True, force_closed=False))
        calls = gateway.state()["calls"]
        skipped = checkout_burst(server.url, customers, products) + checkout_burst(server.url, customers, products)
        assert {(r.status, r.order_status) for r in skipped} == {(201, "pending_payment")}
        assert max(r.elapsed for r in skipped) < READ_TIMEOUT
        assert gateway.state()["calls"] == calls

        # Automatic again: the breaker lets one trial call through for the fleet (the checkouts that meet it while
        # the trial runs stay pending_payment); the trial finds the gateway working and closes it: checkouts are paid.
        wait_obeyed(control_set(deployment, force_open=False))
        resumed: list[Checkout] = []
        for _ in range(10):
            burst = checkout_burst(server.url, customers, products)
            resumed += burst
            if {r.order_status for r in burst} == {"paid"}:
                break
        assert {r.order_status for r in burst} == {"paid"}, [r.describe() for r in resumed]
        assert {(r.status, r.order_status) for r in resumed} <= {(201, "paid"), (201, "pending_payment")}
        waiting = sum(r.order_status == "pending_payment" for r in resumed)

        output = run_manage("retry_payments", env={**deployment.env, **gateway_env(gateway)})
        assert f"{len(failing) + len(skipped) + waiting} paid, 0 declined" in output, output
        deployment.wait_replica_caught_up()
        statuses = order_statuses(server.url, customers)
        assert sorted(set(statuses.values())) == ["paid", "payment_failed"]
        assert_one_charge_per_order(gateway)
        audit = deployment.stack.psql(
            "primary", "SELECT count(*) FROM resilience_controlauditentry WHERE key LIKE 'breaker.%'"
        )
        assert int(audit) == 4
        assert_no_server_errors(server)
