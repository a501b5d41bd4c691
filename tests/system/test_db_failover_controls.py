"""Operator switches (stored in the database, set through the audited service) are obeyed by every worker
within 2 s, and still while the primary is down: a worker that starts then reads them from the replica.

Real processes: a throwaway devstack and gunicorn with 2 workers; see tests/system/dbfailover.py. Requests go
out on fresh connections, so both workers answer some of them.
"""

from __future__ import annotations

import itertools
import time

import pytest
import requests

from tests.system.dbfailover import (
    REPLICA_ALIAS,
    REQUEST_TIMEOUT,
    Deployment,
    Timed,
    add_to_cart,
    assert_no_server_errors,
    assert_read_only_mode,
    customer_logged_in,
    product_ids,
)

pytestmark = pytest.mark.system

OBEYED_WITHIN = 2.0  # seconds from the change being committed to every worker obeying it
ROUNDS = 12  # requests per check, on fresh connections: both workers get several
MAINTENANCE = "maintenance"  # in the message of a refusal caused by the switch (not by a primary outage)


def _wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _assert_maintenance(writes: list[Timed]) -> None:
    for write in writes:
        assert_read_only_mode(write, max_seconds=1.0)
        assert MAINTENANCE in write.response.json()["error"]["message"], write.describe()


def test_operator_switches_obeyed_by_every_worker_within_2s_and_while_primary_down(tmp_path) -> None:
    with Deployment("fo-controls", 62460, tmp_path) as deployment:
        server = deployment.serve()
        ids = product_ids(server.url)
        products = itertools.cycle(ids)
        shopper = customer_logged_in(server.url, "ops")
        deployment.wait_replica_caught_up()
        assert add_to_cart(server.url, shopper, next(products)).status == 201
        assert deployment.replica_serves_reads(server, ids) > 0

        def writes() -> list[Timed]:
            return [add_to_cart(server.url, shopper, next(products)) for _ in range(ROUNDS)]

        # Maintenance (read-only) mode: every write refused, reads go on.
        _wait_until(deployment.control_set(**{"db.read_only": True}) + OBEYED_WITHIN)
        _assert_maintenance(writes())
        reads = [requests.get(f"{server.url}/api/products/{pid}/", timeout=REQUEST_TIMEOUT) for pid in ids[:ROUNDS]]
        assert {r.status_code for r in reads} == {200}
        _wait_until(deployment.control_set(**{"db.read_only": False}) + OBEYED_WITHIN)
        assert [w.status for w in writes()] == [201] * ROUNDS

        # Drain the replica: no read goes to it; undrain: reads return to it.
        _wait_until(deployment.control_set(**{f"db.drain.{REPLICA_ALIAS}": True}) + OBEYED_WITHIN)
        assert deployment.replica_serves_reads(server, ids) == 0
        _wait_until(deployment.control_set(**{f"db.drain.{REPLICA_ALIAS}": False}) + OBEYED_WITHIN)
        assert deployment.replica_serves_reads(server, ids) > 0

        # Primary-only reads: likewise.
        _wait_until(deployment.control_set(**{"db.primary_only_reads": True}) + OBEYED_WITHIN)
        assert deployment.replica_serves_reads(server, ids) == 0
        _wait_until(deployment.control_set(**{"db.primary_only_reads": False}) + OBEYED_WITHIN)
        assert deployment.replica_serves_reads(server, ids) > 0

        # Maintenance mode stays obeyed with the primary down, also by a server that starts meanwhile and can
        # only learn the switches from the replica.
        _wait_until(deployment.control_set(**{"db.read_only": True}) + OBEYED_WITHIN)
        deployment.wait_replica_caught_up()
        deployment.stack.kill("primary")
        late = deployment.serve("gunicorn-late")
        for _ in range(ROUNDS):  # every worker starts its monitor with its first request
            assert requests.get(f"{late.url}/api/products/?page_size=5", timeout=REQUEST_TIMEOUT).status_code == 200
        time.sleep(OBEYED_WITHIN + 1)  # a few monitor rounds with the primary down
        _assert_maintenance(writes())
        for write in [add_to_cart(late.url, shopper, next(products)) for _ in range(ROUNDS)]:
            assert_read_only_mode(write, max_seconds=1.0)
            assert MAINTENANCE in write.response.json()["error"]["message"], write.describe()

        # The primary back: still maintenance (the switch is stored, not forgotten), until it is switched off.
        deployment.stack.start("primary")
        time.sleep(OBEYED_WITHIN)
        _assert_maintenance(writes())
        _wait_until(deployment.control_set(**{"db.read_only": False}) + OBEYED_WITHIN)
        assert [w.status for w in writes()] == [201] * ROUNDS
        assert {add_to_cart(late.url, shopper, next(products)).status for _ in range(ROUNDS)} == {201}

        audit = deployment.stack.psql("primary", "SELECT count(*) FROM resilience_controlauditentry")
        assert int(audit) == 8  # every change audited
        assert_no_server_errors(server, late)
