"""Replication lag: a client sees its own writes with the replica 5 s behind, and a replica past
DB_REPLICA_MAX_LAG leaves the read rotation and returns once it has caught up.

Real processes: a throwaway devstack per test (``recovery_min_apply_delay`` on the replica) and gunicorn with
2 workers; see tests/system/dbfailover.py. Whether a read was served by the replica is read from the replica's
own ``pg_stat_activity`` (the app sessions whose latest query touched the table, started after a moment).
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.system.dbfailover import (
    REPLICA_ALIAS,
    REQUEST_TIMEOUT,
    Customer,
    Deployment,
    add_to_cart,
    assert_no_server_errors,
    customer_logged_in,
    full_log,
    login,
    poll,
    product_ids,
    register,
)

pytestmark = pytest.mark.system

APPLY_DELAY = 5
THREADS = 4
PAIRS = 200  # 32 register-then-login (two password hashes, ~0.4 s each: kept few) and 168 add-then-read-cart


def _register_then_login(base_url: str) -> str | None:
    """A new client (its own cookie jar) registers and logs in at once; None when it worked."""
    customer = register(base_url, "ryw", session=requests.Session())
    response = login(base_url, customer)
    if response.status_code != 200:
        return f"login right after registering {customer.username}: {response.status_code} {response.text[:200]}"
    if response.headers.get("X-Data-Stale"):
        return f"login of {customer.username} answered from stale data"
    return None


def _add_then_read_cart(base_url: str, customer: Customer, product_id: int, expected: int) -> str | None:
    """Add one of a product, then read the cart with the same client: the line must show the new quantity."""
    added = add_to_cart(base_url, customer, product_id, fresh_connection=False)
    if added.status != 201:
        return f"add to cart: {added.describe()}"
    cart = customer.session.get(f"{base_url}/api/cart/", headers=customer.auth, timeout=REQUEST_TIMEOUT)
    if cart.status_code != 200:
        return f"cart: {cart.status_code} {cart.text[:200]}"
    quantities = {item["product"]["id"]: item["quantity"] for item in cart.json()["items"]}
    if quantities.get(product_id) != expected:
        return f"{customer.username} added product {product_id} (now {expected}) but the cart shows {quantities}"
    if cart.headers.get("X-Data-Stale"):
        return "cart answered from stale data"
    return None


def test_read_your_writes_with_replica_5s_behind_then_reads_return_to_replica(tmp_path) -> None:
    with Deployment("fo-ryw", 62440, tmp_path) as deployment:
        server = deployment.serve()
        ids = product_ids(server.url)
        shoppers = [customer_logged_in(server.url, f"shopper{n}-") for n in range(THREADS)]
        deployment.wait_replica_caught_up()
        assert deployment.replica_serves_reads(server, ids) > 0  # reads do go to the replica to begin with

        deployment.stack.set_apply_delay(APPLY_DELAY)
        # The delay bites: a new account is on the primary, not yet on the replica.
        probe = register(server.url, "probe")
        on_replica = deployment.stack.psql(
            "replica",
            f"SELECT count(*) FROM auth_user WHERE username = '{probe.username}'",  # noqa: S608
        )
        assert on_replica == "0"

        def client(n: int) -> list[str | None]:
            """50 pairs, one after the other: every sixth a new client registering and logging in at once."""
            shopper, outcomes, quantities = shoppers[n], [], {}
            products = itertools.cycle(ids[n::THREADS])
            for i in range(PAIRS // THREADS):
                if i % 6 == 5:
                    outcomes.append(_register_then_login(server.url))
                    continue
                product_id = next(products)
                quantities[product_id] = quantities.get(product_id, 0) + 1
                outcomes.append(_add_then_read_cart(server.url, shopper, product_id, quantities[product_id]))
            return outcomes

        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = [outcome for result in pool.map(client, range(THREADS)) for outcome in result]
        took = time.monotonic() - started
        failures = [outcome for outcome in outcomes if outcome is not None]
        assert len(outcomes) == PAIRS == 200
        assert not failures, f"{len(failures)} of {PAIRS} write-then-read pairs missed their write: {failures[:5]}"
        # The replica really was behind while the pairs ran (they were answered from the primary).
        lag = deployment.stack.psql("replica", "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
        assert lag == "t"

        # Caught up: the same clients (read-after cookies still valid) read from the replica again.
        deployment.stack.set_apply_delay(0)
        deployment.wait_replica_caught_up()

        def carts_on_replica() -> bool:
            since = deployment.replica_clock()
            for shopper in shoppers:
                cart = shopper.session.get(f"{server.url}/api/cart/", headers=shopper.auth, timeout=REQUEST_TIMEOUT)
                assert cart.status_code == 200 and "X-Data-Stale" not in cart.headers, cart.text
            return deployment.replica_queries_since(since, "shop_cartitem") > 0

        poll(carts_on_replica, timeout=10, interval=0.5)
        assert_no_server_errors(server)
        print(f"{PAIRS} write-then-read pairs in {took:.1f}s, every one saw its write")


def test_lagging_replica_leaves_rotation_and_returns(tmp_path) -> None:
    with Deployment("fo-lag", 62450, tmp_path) as deployment:
        server = deployment.serve(DB_REPLICA_MAX_LAG="2s")
        ids = product_ids(server.url)
        shopper = customer_logged_in(server.url, "lag")
        deployment.wait_replica_caught_up()
        assert deployment.replica_serves_reads(server, ids) > 0  # both workers' monitors run; replica in use

        stop = threading.Event()
        writes: list[int] = []

        def writer() -> None:  # keeps WAL pending on the replica while the delay holds
            for product_id in itertools.cycle(ids):
                if stop.is_set():
                    return
                writes.append(add_to_cart(server.url, shopper, product_id).status)
                stop.wait(0.5)

        assert "db_replica_lagging" not in full_log(server)
        deployment.stack.set_apply_delay(6)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            # Each worker's monitor logs the change once (none has logged it caught up again yet).
            lagging, workers = f"db_replica_lagging: {REPLICA_ALIAS}", int(server.env["WEB_CONCURRENCY"])
            _, evicted_in = poll(lambda: full_log(server).count(lagging) >= workers, timeout=15)
            assert deployment.replica_serves_reads(server, ids) == 0  # out of rotation: reads go to the primary
            deployment.stack.set_apply_delay(0)
            _, returned_in = poll(lambda: "db_replica_caught_up" in full_log(server), timeout=15)
        finally:
            stop.set()
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        # Back in rotation: cookie-less reads are served by the replica again.
        poll(lambda: deployment.replica_serves_reads(server, ids) > 0, timeout=10, interval=0.5)

        assert writes and set(writes) == {201}, writes
        log = full_log(server)
        assert f"db_replica_lagging: {REPLICA_ALIAS}" in log and f"db_replica_caught_up: {REPLICA_ALIAS}" in log
        assert f"database node down: {REPLICA_ALIAS}" not in log  # lagging is not down
        assert_no_server_errors(server)
        print(f"left rotation {evicted_in:.1f}s after the delay, back {returned_in:.1f}s after it was removed")
