"""Scale-out on the real engines: the Patroni leader's host is lost under a checkout load, and no acknowledged
order is lost.

``python -m devstack ha up --no-app`` starts etcd, three Patroni nodes (synchronous mode: a commit is acknowledged
only once the synchronous standby has it), Redis + three Sentinels and HAProxy (``primary`` checked against
Patroni's ``/primary``, ``replicas`` against ``/replica?lag=``). One Bulwark gunicorn runs against it by
configuration only (``ha env``: the primary and the replicas through HAProxy, Redis through the Sentinels). Then:

1. shoppers check out in a loop (cart add + ``POST /api/orders/`` with an ``Idempotency-Key``), each order that
   answers ``201`` recorded with its id;
2. the leader's host is lost (``ha kill leader``: its Patroni and its PostgreSQL SIGKILLed together); Patroni
   promotes the synchronous standby, HAProxy follows, Bulwark follows HAProxy -- no restart, no new URL;
3. checkouts succeed again (writes back), and afterwards every order that got a ``201`` is found on the new
   leader, with its lines: **zero acknowledged orders lost**. Meanwhile nothing answered 500: the orders cut off
   say ``503`` (``read_only_mode``, ``outcome_unknown``, ``dependency_unavailable``), never a traceback.

Bounds are on correctness with generous time limits (Patroni's failover takes ≈ 9-15 s with ttl 10).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
import requests

from tests.helpers import poll
from tests.system.conftest import ROOT, Gunicorn
from tests.system.dbfailover import REQUEST_TIMEOUT, Customer, add_to_cart, app_env, customer_logged_in, run_manage

pytestmark = pytest.mark.system

NAME = "ha-systest"
PORT_BASE = 62000  # devstack ha uses N .. N+61
SHOPPERS = 4
WRITES_BACK_WITHIN = 90  # seconds from the kill: generous (≈ 10-20 s seen), the machine is shared
ACKNOWLEDGED_STATUS = 201


def devstack_ha(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "--name", NAME, "--port-base", str(PORT_BASE), "ha", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"devstack ha {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


@dataclass
class Topology:
    env: dict[str, str]
    server: Gunicorn

    def status(self) -> dict:
        return json.loads(devstack_ha("status", "--json", check=False).stdout)

    def primary(self) -> psycopg.Connection:
        return psycopg.connect(self.env["DATABASE_URL"], autocommit=True, connect_timeout=5)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    devstack_ha("down", check=False)  # leftovers of an interrupted run
    server = None
    try:
        devstack_ha("up", "--no-app")
        ha_env = parse_env(devstack_ha("env").stdout)
        assert "REDIS_SENTINELS" in ha_env and "DATABASE_URL" in ha_env, ha_env
        env = app_env(ha_env, WEB_CONCURRENCY="2")
        env.pop("REDIS_URL", None)  # the suite's single Redis: here the Sentinels name the master
        run_manage("migrate", "--noinput", env=env, timeout=180)
        run_manage("seed_demo", "-v", "0", env=env, timeout=180)
        with psycopg.connect(ha_env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("UPDATE shop_product SET stock = 1000000")  # no checkout here may run out of stock
        server = Gunicorn(env, tmp_path_factory.mktemp("ha") / "gunicorn.log")
        yield Topology(ha_env, server)
    except BaseException:
        print(devstack_ha("status", check=False).stdout)
        if server is not None:
            print(f"--- gunicorn (tail) ---\n{server.log_text()}")
        raise
    finally:
        if server is not None:
            server.stop()
        devstack_ha("down", check=False)


@dataclass(frozen=True)
class Order:
    sent: float  # time.monotonic()
    status: int  # 0: no answer (connection error, client timeout)
    code: str | None
    order_id: int | None
    username: str


@dataclass
class Checkouts:
    """``SHOPPERS`` threads, each checking out (cart add + order) as its own customer until stopped."""

    base_url: str
    customers: list[Customer]
    products: list[int]
    orders: list[Order] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Checkouts:
        for customer in self.customers:
            thread = threading.Thread(target=self._shop, args=(customer,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT * 2 + 5)

    def _shop(self, customer: Customer) -> None:
        products = itertools.cycle(self.products)
        while not self._stop.is_set():
            add_to_cart(self.base_url, customer, next(products))  # a refused add leaves the cart as it was
            sent = time.monotonic()
            try:
                response = requests.post(
                    f"{self.base_url}/api/orders/",
                    headers={**customer.auth, "Idempotency-Key": uuid.uuid4().hex},
                    timeout=REQUEST_TIMEOUT,
                )
            except requests.RequestException:
                self._note(Order(sent, 0, None, None, customer.username))
                continue
            body = _json(response)
            order_id = body.get("id") if response.status_code == ACKNOWLEDGED_STATUS else None
            code = (body.get("error") or {}).get("code") if isinstance(body.get("error"), dict) else None
            self._note(Order(sent, response.status_code, code, order_id, customer.username))
            self._stop.wait(0.05)

    def _note(self, order: Order) -> None:
        with self._lock:
            self.orders.append(order)

    def acknowledged_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for order in self.orders if order.sent >= since and order.status == ACKNOWLEDGED_STATUS)

    def summary(self) -> str:
        with self._lock:
            counts = Counter((order.status, order.code) for order in self.orders)
        return ", ".join(f"{status} {code or ''}".strip() + f": {n}" for (status, code), n in sorted(counts.items()))


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def leader(status: dict) -> str | None:
    return status.get("leader")  # Patroni's leader, from its REST API (devstack ha status --json)


def test_the_leaders_host_lost_under_checkouts_loses_no_acknowledged_order(topology: Topology, capsys) -> None:
    url = topology.server.url
    products = [product["id"] for product in requests.get(f"{url}/api/products/", timeout=10).json()["results"]]
    customers = [customer_logged_in(url, f"ha{n}") for n in range(SHOPPERS)]
    old_leader = leader(topology.status())
    assert old_leader, topology.status()

    with Checkouts(url, customers, products) as load:
        poll(lambda: load.acknowledged_since(0) >= 20, 60, interval=0.2)  # checkouts flow before the fault
        killed = time.monotonic()
        devstack_ha("kill", "leader")
        # Writes come back by themselves: Patroni promotes the synchronous standby, HAProxy's /primary check moves
        # to it, and Bulwark's monitor sees a primary again through the same URL.
        poll(lambda: load.acknowledged_since(time.monotonic() - 2) >= 5, WRITES_BACK_WITHIN, interval=0.25)
        back = time.monotonic() - killed
        time.sleep(2)  # a few more on the new leader

    new_leader = leader(topology.status())
    assert new_leader and new_leader != old_leader, topology.status()
    acknowledged = [order for order in load.orders if order.status == ACKNOWLEDGED_STATUS]
    with topology.primary() as conn:
        found = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT o.id, u.username FROM shop_order o JOIN auth_user u ON u.id = o.user_id WHERE o.id = ANY(%s)",
                [[order.order_id for order in acknowledged]],
            )
        }
        with_lines = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT order_id FROM shop_orderitem WHERE order_id = ANY(%s)",
                [[order.order_id for order in acknowledged]],
            )
        }
    lost = [order for order in acknowledged if found.get(order.order_id) != order.username]
    assert not lost, f"{len(lost)} acknowledged orders missing on the new leader: {lost[:5]}"
    assert with_lines == {order.order_id for order in acknowledged}  # each with its lines
    after = [order for order in acknowledged if order.sent > killed]
    server_errors = [order for order in load.orders if order.status >= 500 and order.status != 503]
    assert not server_errors, load.summary()
    with capsys.disabled():
        print(
            f"\n[ha failover] leader {old_leader} -> {new_leader}; checkouts answered 201 again {back:.1f} s after "
            f"the kill; {len(acknowledged)} orders acknowledged ({len(after)} after the kill), all found, 0 lost; "
            f"answers: {load.summary()}"
        )


def test_the_old_leader_rejoins_as_a_replica(topology: Topology) -> None:
    """After the lost host comes back (``ha start``): it follows the new leader (pg_rewind), and the cluster is
    whole again -- one leader, two replicas."""
    devstack_ha("start", timeout=300)
    poll(lambda: devstack_ha("status", check=False).returncode == 0, 120, interval=1)
    status = topology.status()
    roles = sorted(str(status["processes"][node].get("role")) for node in ("pg1", "pg2", "pg3"))
    assert roles.count("leader") == 1 and len(roles) == 3, status["processes"]
    assert status["healthy"], status["problems"]
