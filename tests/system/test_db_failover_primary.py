"""The primary fails under load: reads continue on the replica, writes answer 503 read_only_mode, logging in
keeps working; the primary comes back (restarted, or the replica promoted) and writes resume without a restart.

Real processes: a throwaway devstack per test (kill -9 of the postmaster, ``pg_ctl promote``) and gunicorn with
2 workers; the load comes from threads on loopback. See tests/system/dbfailover.py.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from tests.system.dbfailover import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    Deployment,
    GetLoad,
    Timed,
    add_to_cart,
    assert_no_server_errors,
    assert_read_only_mode,
    customer_logged_in,
    full_log,
    login,
    poll,
    product_ids,
    register,
    run_manage,
)

pytestmark = pytest.mark.system

OUTAGE_SECONDS = 6
PROBE_ROUND = 2  # every worker's monitor has probed each node at least once within this many seconds


def test_primary_killed_reads_continue_writes_read_only_login_works_then_writes_resume(tmp_path) -> None:
    with Deployment("fo-primary-kill", 62400, tmp_path) as deployment:
        run_manage("rotate_jwt_key", env=deployment.env)  # tokens are signed by a key of the database ring
        server = deployment.serve()
        ids = product_ids(server.url)
        products = itertools.cycle(ids[16:])
        alice = customer_logged_in(server.url, "alice")
        assert jwt.get_unverified_header(alice.access)["kid"].startswith("db-")
        bob = register(server.url, "bob")  # logs in for the first time while the primary is down
        # Concurrent writes: every thread of both workers holds a connection to the primary when it dies.
        with ThreadPoolExecutor(8) as pool:
            warm = list(pool.map(lambda pid: add_to_cart(server.url, alice, pid), ids[:16]))
        assert [w.status for w in warm] == [201] * len(warm), [w.describe() for w in warm if w.status != 201]
        deployment.wait_replica_caught_up()  # both accounts and the cart are on the replica

        with GetLoad(server.url, ids) as load:
            time.sleep(2)
            killed_at = time.monotonic()
            deployment.stack.kill("primary")

            # The first write pays at most one connect timeout; every later one is refused at once.
            writes = [add_to_cart(server.url, alice, next(products)) for _ in range(6)]
            assert_read_only_mode(writes[0], max_seconds=CONNECT_TIMEOUT + 3)
            for write in writes[1:]:
                assert_read_only_mode(write, max_seconds=1.0)

            # Logging in and refreshing work on the replica; their bookkeeping writes are skipped.
            started = time.monotonic()
            logged_in = login(server.url, bob)
            assert logged_in.status_code == 200, logged_in.text
            assert time.monotonic() - started < CONNECT_TIMEOUT + 3
            me = requests.get(f"{server.url}/api/auth/me/", headers=bob.auth, timeout=REQUEST_TIMEOUT)
            assert me.status_code == 200 and me.json()["username"] == bob.username, me.text
            # The ring is re-read every second: with the primary gone it comes from the replica (or stays cached).
            assert jwt.get_unverified_header(bob.access)["kid"] == jwt.get_unverified_header(alice.access)["kid"]
            refreshed = requests.post(
                f"{server.url}/api/auth/token/refresh/", json={"refresh": alice.refresh}, timeout=REQUEST_TIMEOUT
            )
            assert refreshed.status_code == 200, refreshed.text
            assert set(refreshed.json()) >= {"access", "refresh"}
            # The used refresh token cannot be replayed on any worker, though nothing could be blacklisted.
            for replayed in [_refresh(server.url, alice.refresh) for _ in range(6)]:
                assert replayed.status_code == 401, replayed.text
                assert replayed.json()["error"]["detail"]["reason"] == "blacklisted", replayed.text
            cart = requests.get(
                f"{server.url}/api/cart/",
                headers={"Authorization": f"Bearer {refreshed.json()['access']}"},
                timeout=REQUEST_TIMEOUT,
            )
            assert cart.status_code == 200 and len(cart.json()["items"]) == len(warm), cart.text

            time.sleep(max(0.0, killed_at + OUTAGE_SECONDS - time.monotonic()))
            restarted_at = time.monotonic()
            deployment.stack.start("primary")
            outage = load.between(killed_at, restarted_at)

            # Writes succeed again within a few seconds; meanwhile they are refused, never a 500 or a hang.
            after: list[Timed] = []

            def write_accepted() -> bool:
                after.append(add_to_cart(server.url, alice, next(products)))
                return after[-1].status == 201

            _, recovered_in = poll(write_accepted, timeout=15, interval=0.3)
            for write in after[:-1]:
                assert_read_only_mode(write, max_seconds=CONNECT_TIMEOUT + 3)
            # Each worker closes its own breaker on its next probe (every second). From then on the primary stays
            # in use: every write succeeds, whichever worker and thread serves it (no flapping on stale connections).
            time.sleep(PROBE_ROUND)
            later = [add_to_cart(server.url, alice, next(products)) for _ in range(16)]
            assert [w.status for w in later] == [201] * len(later), [w.describe() for w in later if w.status != 201]
            time.sleep(1)

            # The deferred blacklist row is written once the primary is back; the token stays refused.
            used_jti = jwt.decode(alice.refresh, options={"verify_signature": False})["jti"]
            assert used_jti.isalnum()  # a hex uuid: safe to put in the SQL text
            blacklisted = (
                "SELECT count(*) FROM token_blacklist_blacklistedtoken b "  # noqa: S608 - see the assert above
                f"JOIN token_blacklist_outstandingtoken o ON o.id = b.token_id WHERE o.jti = '{used_jti}'"
            )
            poll(lambda: deployment.stack.psql("primary", blacklisted).strip() == "1", timeout=10, interval=0.3)
            replayed = _refresh(server.url, alice.refresh)
            assert replayed.status_code == 401 and replayed.json()["error"]["detail"]["reason"] == "blacklisted"

        load.assert_all_ok(min_requests=50)
        assert len(outage) >= 20, f"too few GETs while the primary was down: {load.summary(outage)}"
        assert recovered_in < 15
        log = full_log(server)
        assert "database node down: default" in log
        assert "database node up: default" in log
        # One outage, one transition each way per worker (2): no flapping once the primary is back.
        assert log.count("database node down: default") <= 2, log.count("database node down: default")
        assert "skipped best-effort write" in log  # the login's bookkeeping was skipped, not failed
        assert "refresh_replay_unguarded" not in log and "deferred refresh blacklist row" in log
        assert_no_server_errors(server)
        print(f"outage: {load.summary(outage)}; writes back {recovered_in:.1f}s after the restart")


def test_replica_promoted_with_multihost_url_writes_resume_without_restart(tmp_path) -> None:
    with Deployment("fo-promote", 62410, tmp_path) as deployment:
        server = deployment.serve(
            DATABASE_URL=deployment.stack_env["DATABASE_URL_MULTIHOST"],
            DATABASE_REPLICA_URLS=deployment.stack_env["DATABASE_REPLICA_URLS"],
        )
        assert "target_session_attrs=read-write" in deployment.stack_env["DATABASE_URL_MULTIHOST"]
        ids = product_ids(server.url)
        products = itertools.cycle(ids)
        alice = customer_logged_in(server.url, "alice")
        assert add_to_cart(server.url, alice, next(products)).status == 201
        deployment.wait_replica_caught_up()  # the write is on the replica before the primary dies
        workers_before = {line for line in full_log(server).splitlines() if "Booting worker" in line}

        with GetLoad(server.url, ids) as load:
            time.sleep(2)
            deployment.stack.kill("primary")
            refused = add_to_cart(server.url, alice, next(products))
            assert_read_only_mode(refused, max_seconds=CONNECT_TIMEOUT + 3)
            time.sleep(2)
            deployment.stack.promote()

            def write_accepted() -> Timed | None:
                write = add_to_cart(server.url, alice, next(products))
                assert write.status in (201, 503), write.describe()
                return write if write.status == 201 else None

            accepted, resumed_in = poll(write_accepted, timeout=10, interval=0.2)
            time.sleep(1)

        assert server.process.poll() is None  # the same gunicorn master served throughout
        workers_after = {line for line in full_log(server).splitlines() if "Booting worker" in line}
        assert workers_after == workers_before, "gunicorn workers were restarted"
        assert resumed_in < 10, f"writes resumed only {resumed_in:.1f}s after the promotion"
        # The accepted write is on the promoted node (the old primary stays down).
        assert deployment.stack.status()["replica"]["in_recovery"] is False
        lines = deployment.stack.psql("replica", "SELECT count(*) FROM shop_cartitem")
        assert int(lines) == len(accepted.response.json()["items"]) == 2, accepted.describe()
        load.assert_all_ok(min_requests=30)
        assert_no_server_errors(server)
        print(f"writes resumed {resumed_in:.1f}s after the promotion; reads: {load.summary()}")


def _refresh(url: str, token: str) -> requests.Response:
    return requests.post(f"{url}/api/auth/token/refresh/", json={"refresh": token}, timeout=REQUEST_TIMEOUT)


HANG_SECONDS = 6
MAX_SECONDS = 2.0  # no GET and no write waits longer on the hung primary (the bench reports the 1 s goal)


def test_primary_hung_reads_continue_writes_answer_fast_then_resume(tmp_path) -> None:
    """SIGSTOP of the primary's whole process family under read load and a stream of writes: every GET answers
    (from the replica), every write answers within the bound -- 201 before, 503 ``read_only_mode`` (nothing was
    written) or 503 ``outcome_unknown`` (cut off after it was sent) during -- and writes resume after SIGCONT."""
    with Deployment("fo-primary-hang", 62490, tmp_path) as deployment:
        server = deployment.serve()
        ids = product_ids(server.url)
        products = itertools.cycle(ids)
        alice = customer_logged_in(server.url, "alice")
        assert add_to_cart(server.url, alice, next(products)).status == 201
        deployment.wait_replica_caught_up()

        writes: list[Timed] = []
        with GetLoad(server.url, ids) as load:
            time.sleep(2)
            hung_at = time.monotonic()
            deployment.stack.hang("primary")
            try:
                while time.monotonic() < hung_at + HANG_SECONDS:
                    writes.append(add_to_cart(server.url, alice, next(products)))
            finally:
                resumed_at = time.monotonic()
                deployment.stack.resume("primary")

            def write_accepted() -> bool:
                return add_to_cart(server.url, alice, next(products)).status == 201

            _, recovered_in = poll(write_accepted, timeout=15, interval=0.3)

        hang = load.between(hung_at, resumed_at)
        load.assert_all_ok(min_requests=50)
        assert len(hang) >= 20, f"too few GETs while the primary was hung: {load.summary(hang)}"
        slowest = max(hang, key=lambda sample: sample.elapsed)
        assert slowest.elapsed < MAX_SECONDS, slowest
        assert len(writes) >= 5
        for write in writes:
            assert write.elapsed < MAX_SECONDS, write.describe()
            assert write.status == 201 or (
                write.status == 503 and write.code() in ("read_only_mode", "outcome_unknown")
            )
        assert any(write.status == 503 for write in writes), [w.describe() for w in writes]
        assert recovered_in < 15
        log = full_log(server)
        assert "database node down: default" in log
        assert_no_server_errors(server)
        codes = Counter(write.code() or write.status for write in writes)
        slowest_write = max(write.elapsed for write in writes)
        print(
            f"primary hung: {load.summary(hang)}; writes {dict(codes)}, slowest {slowest_write:.2f}s; "
            f"writes back {recovered_in:.1f}s after SIGCONT"
        )
