"""A hung node stalls no request for long: suspicion while a probe is overdue, queries in flight cut off when the
node is marked down, recovery after several good probes, slow replicas out of rotation, and writes cut off after
they were sent reported as ``outcome_unknown`` -- against the real test primary and replica."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

from core.api.responses import error_response
from resilience.db import context
from resilience.db.middleware import DatabaseRoutingMiddleware
from resilience.db.nodes import MONITORED, PRIMARY, NodeRegistry, registry
from shop.catalog.models import Product
from tests.factories import ProductFactory

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


def monitored() -> NodeRegistry:
    return NodeRegistry([REPLICA], max_lag_seconds=30, policy=MONITORED)


def good_probe(nodes: NodeRegistry, alias: str, latency: float = 0.002) -> None:
    nodes.record_probe(
        alias, in_recovery=alias != PRIMARY, lag_seconds=0.0, lag_bytes=0, replay_lsn=None, latency=latency
    )


# ---- suspicion, recovery, slowness (the registry's judgement of probe timings) ---------------------------------


def test_a_node_whose_probe_is_overdue_gets_no_new_connection_and_no_new_read() -> None:
    nodes = monitored()
    nodes.probe_begun(REPLICA)
    assert nodes.may_connect(REPLICA) and nodes.readable_replicas() == [REPLICA]  # in time so far
    time.sleep(MONITORED.suspect_after + 0.05)
    assert not nodes.may_connect(REPLICA)
    assert nodes.readable_replicas() == [] and nodes.reachable_replicas() == []
    assert nodes.state(REPLICA).reachable  # suspect, not down: queries already running go on
    nodes.probe_ended(REPLICA)
    assert nodes.may_connect(REPLICA) and nodes.readable_replicas() == [REPLICA]


def test_an_overdue_primary_probe_still_takes_writes_on_open_connections() -> None:
    nodes = monitored()
    nodes.probe_begun(PRIMARY)
    time.sleep(MONITORED.suspect_after + 0.05)
    assert nodes.primary_available()  # writes are not refused for a slow probe ...
    assert not nodes.may_connect(PRIMARY)  # ... but no new connection is opened to it
    nodes.probe_ended(PRIMARY)


def test_a_node_comes_back_after_consecutive_good_probes_only() -> None:
    nodes = monitored()
    nodes.mark_down(REPLICA, "probe deadline passed")
    for _ in range(MONITORED.recover_after - 1):
        good_probe(nodes, REPLICA)
        assert not nodes.state(REPLICA).reachable
    nodes.mark_down(REPLICA, "failed again")  # a bad probe in between starts the count again
    for _ in range(MONITORED.recover_after - 1):
        good_probe(nodes, REPLICA)
    assert not nodes.state(REPLICA).reachable
    good_probe(nodes, REPLICA)
    assert nodes.state(REPLICA).reachable and nodes.readable_replicas() == [REPLICA]


def test_a_replica_much_slower_than_the_primary_leaves_the_rotation_and_returns() -> None:
    nodes = monitored()
    for _ in range(10):
        good_probe(nodes, PRIMARY, latency=0.002)
        good_probe(nodes, REPLICA, latency=0.2)  # CPU-starved: answers, slowly
    assert nodes.state(REPLICA).slow and nodes.readable_replicas() == []
    assert nodes.reachable_replicas() == [REPLICA]  # still the last resort when the primary is down
    for _ in range(3):
        good_probe(nodes, REPLICA, latency=0.03)
    assert nodes.state(REPLICA).slow  # not back at the first better probe: no flapping
    for _ in range(40):
        good_probe(nodes, REPLICA, latency=0.002)
    assert not nodes.state(REPLICA).slow and nodes.readable_replicas() == [REPLICA]


def test_the_odd_slow_probe_of_a_busy_machine_moves_nothing() -> None:
    nodes = monitored()
    for round_ in range(50):
        good_probe(nodes, PRIMARY, latency=0.003)
        good_probe(nodes, REPLICA, latency=0.2 if round_ % 10 == 0 else 0.004)  # a spike every tenth probe
        assert not nodes.state(REPLICA).slow, round_


def test_a_busy_machine_is_not_a_slow_replica() -> None:
    nodes = monitored()
    for _ in range(10):
        good_probe(nodes, PRIMARY, latency=0.15)  # everything is slow: the load is the machine's, not the node's
        good_probe(nodes, REPLICA, latency=0.2)
    assert not nodes.state(REPLICA).slow and nodes.readable_replicas() == [REPLICA]


# ---- cutting off what is in flight --------------------------------------------------------------------------


def _run_in_thread(work) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = work()
        except DatabaseError as exc:
            outcome["error"] = exc
        finally:
            outcome["seconds"] = time.monotonic() - started
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_marking_a_node_down_cuts_off_the_queries_in_flight_on_it() -> None:
    def sleeper() -> None:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(20)")  # a query that would hold its request for its whole deadline

    thread, outcome = _run_in_thread(sleeper)
    time.sleep(0.5)  # the query is on the server
    registry().mark_down(REPLICA, "probe deadline passed")
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), DatabaseError)
    assert outcome["seconds"] < 3  # cut at once, not at the query's own 5 s deadline (nor pg_sleep's 20 s)


# ---- writes cut off: what the client is told --------------------------------------------------------------


@pytest.fixture
def locked_product():
    """A product row held by another session's lock: a write to it waits on the server, in flight."""
    product = ProductFactory(stock=10)
    holder = psycopg.connect(**connections[PRIMARY].get_connection_params())
    holder.execute("BEGIN")
    holder.execute("SELECT 1 FROM shop_product WHERE id = %s FOR UPDATE", (product.pk,))
    yield product
    holder.rollback()
    holder.close()


def _write_then_cut(write) -> context.RoutingState:
    state = context.RoutingState(safe_method=False)

    def in_request() -> None:
        with context.routing(state):
            write()

    thread, outcome = _run_in_thread(in_request)
    time.sleep(0.5)
    registry().mark_down(PRIMARY, "probe deadline passed")
    thread.join(timeout=5)
    assert isinstance(outcome.get("error"), DatabaseError), outcome
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)
    return state


def test_an_autocommit_write_cut_off_in_flight_is_outcome_unknown(locked_product) -> None:
    state = _write_then_cut(lambda: Product.objects.filter(pk=locked_product.pk).update(stock=9))
    assert state.outcome_unknown
    response = error_response(_request(), DatabaseRoutingMiddleware._failure_error(state))
    assert response.status_code == 503 and b'"outcome_unknown"' in response.content


def test_a_write_cut_off_inside_its_transaction_is_read_only_mode_not_unknown(locked_product) -> None:
    def in_transaction() -> None:
        with transaction.atomic():
            Product.objects.filter(pk=locked_product.pk).update(stock=9)  # waits on the lock, uncommitted

    state = _write_then_cut(in_transaction)
    assert not state.outcome_unknown  # the server rolls an unfinished transaction back: nothing was written
    registry().mark_down(PRIMARY, "still down")
    response = error_response(_request(), DatabaseRoutingMiddleware._failure_error(state))
    assert response.status_code == 503 and b'"read_only_mode"' in response.content
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def _slow_on_a_live_node(monkeypatch, write) -> tuple[dict, context.RoutingState]:
    """Runs ``write`` in a request's routing state with a 0.5 s node deadline while a lock holds it."""
    monkeypatch.setitem(connections[PRIMARY].settings_dict, "QUERY_DEADLINE", 0.5)
    state = context.RoutingState(safe_method=False)

    def in_request() -> None:
        with context.routing(state):
            write()

    thread, outcome = _run_in_thread(in_request)
    thread.join(timeout=10)
    assert not thread.is_alive()
    return outcome, state


def test_a_statement_waiting_on_a_lock_past_its_deadline_is_cancelled_not_cut(
    locked_product, monkeypatch, caplog
) -> None:
    """A lock wait is a slow statement on a node that answers: cancelled at the deadline; the primary stays up."""
    outcome, state = _slow_on_a_live_node(
        monkeypatch, lambda: Product.objects.filter(pk=locked_product.pk).update(stock=9)
    )
    error = outcome.get("error")
    assert isinstance(error, DatabaseError), outcome
    assert getattr(error.__cause__, "sqlstate", None) == "57014"  # cancelled by the server, not a cut socket
    assert outcome["seconds"] < 3  # at the 0.5 s deadline (plus the cancel), not the lock holder's whim
    assert registry().state(PRIMARY).reachable  # a slow statement is not a failed node
    assert PRIMARY in state.failed and not state.outcome_unknown  # a cancelled statement wrote nothing
    assert "was cancelled; the node answers" in caplog.text
    assert "cutting the connection off" not in caplog.text
    other = ProductFactory(stock=3)
    Product.objects.filter(pk=other.pk).update(stock=2)  # the primary takes writes: nothing else was hurt


def test_a_statement_past_its_deadline_on_a_suspect_node_is_cut_at_once(locked_product, monkeypatch) -> None:
    """Nobody to ask: a node that turned suspect while the statement ran gets no cancel request; its statement is
    cut at the deadline (and the node marked down by the cut, as before the cancel existed)."""
    nodes = registry()
    answering = nodes.answering
    suspect = threading.Event()
    monkeypatch.setattr(
        nodes, "answering", lambda alias: not (alias == PRIMARY and suspect.is_set()) and answering(alias)
    )
    threading.Timer(0.25, suspect.set).start()  # after the statement was sent, before its 0.5 s deadline
    try:
        outcome, _ = _slow_on_a_live_node(
            monkeypatch, lambda: Product.objects.filter(pk=locked_product.pk).update(stock=9)
        )
        error = outcome.get("error")
        assert isinstance(error, DatabaseError), outcome
        assert getattr(error.__cause__, "sqlstate", None) != "57014"  # the socket was cut, nothing cancelled
        assert outcome["seconds"] < 0.5 + 0.4  # at the deadline, without the cancel's grace
        assert not nodes.state(PRIMARY).reachable
    finally:
        monkeypatch.undo()
        nodes.record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_a_commit_cut_off_is_outcome_unknown() -> None:
    """A deferred constraint trigger makes the COMMIT itself wait on the server (here on a lock)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE hang_probe (id int PRIMARY KEY)")
        cursor.execute("CREATE TABLE hang_gate (id int PRIMARY KEY)")
        cursor.execute("INSERT INTO hang_gate VALUES (1)")
        cursor.execute(
            "CREATE FUNCTION hang_wait() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM 1 FROM hang_gate WHERE id = 1 FOR UPDATE; RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER hang_at_commit AFTER INSERT ON hang_probe DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION hang_wait()"
        )
    holder = psycopg.connect(**connections[PRIMARY].get_connection_params())
    holder.execute("BEGIN")
    holder.execute("SELECT 1 FROM hang_gate WHERE id = 1 FOR UPDATE")
    try:

        def in_transaction() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("INSERT INTO hang_probe VALUES (1)")  # returns; the trigger runs at COMMIT

        state = _write_then_cut(in_transaction)
        assert state.outcome_unknown
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE hang_probe; DROP TABLE hang_gate; DROP FUNCTION hang_wait()")


def _request():
    from django.test import RequestFactory

    return RequestFactory().post("/api/orders/")


def _sleep_on_replica_in(state: context.RoutingState):
    def work() -> None:
        with context.routing(state), connections[REPLICA].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(20)")

    return _run_in_thread(work)


def test_a_suspect_node_has_its_safe_reads_hedged_off_without_being_marked_down() -> None:
    from resilience.db.watchdog import watchdog

    state = context.RoutingState(safe_method=True)
    thread, outcome = _sleep_on_replica_in(state)
    time.sleep(0.5)
    assert watchdog.cut_rerunnable(REPLICA) == 1  # what the monitor does when the replica's probe is overdue
    thread.join(timeout=5)
    assert isinstance(outcome.get("error"), DatabaseError) and outcome["seconds"] < 3
    assert REPLICA in state.failed  # the middleware runs the request again elsewhere ...
    assert registry().state(REPLICA).reachable  # ... and the probe, not this read, decides whether it is down


def test_a_write_requests_read_is_not_hedged() -> None:
    from resilience.db.watchdog import watchdog

    state = context.RoutingState(safe_method=False)
    thread, outcome = _sleep_on_replica_in(state)
    time.sleep(0.5)
    try:
        assert watchdog.cut_rerunnable(REPLICA) == 0  # a write request is not run twice on a suspicion
    finally:
        registry().mark_down(REPLICA, "test: end the sleeper")  # cuts it off for real
        thread.join(timeout=5)
        registry().record_probe(REPLICA, in_recovery=True, lag_seconds=0, lag_bytes=0, replay_lsn=None)
    assert isinstance(outcome.get("error"), DatabaseError)


def test_the_suspicion_timer_fires_and_hedges_the_nodes_safe_reads() -> None:
    """The monitor's wiring: the watchdog timer a probe arms calls the monitor's hedge when the probe is overdue."""
    from resilience.db.monitor import NodeMonitor
    from resilience.db.watchdog import watchdog

    state = context.RoutingState(safe_method=True)
    thread, outcome = _sleep_on_replica_in(state)
    time.sleep(0.5)
    monitor = NodeMonitor(monitored())
    fired: list[bool] = []
    timer = watchdog.call_after(0.1, lambda: fired.append(True) or monitor._suspected(REPLICA), f"{REPLICA} (suspect)")
    thread.join(timeout=5)
    watchdog.disarm(timer)
    assert fired == [True]
    assert isinstance(outcome.get("error"), DatabaseError) and outcome["seconds"] < 3
    assert REPLICA in state.failed and registry().state(REPLICA).reachable


def test_a_disarmed_timer_never_fires() -> None:
    from resilience.db.watchdog import watchdog

    fired: list[bool] = []
    watchdog.disarm(watchdog.call_after(0.05, lambda: fired.append(True), "t"))
    time.sleep(0.3)
    assert fired == []


def test_a_probe_that_hangs_on_its_open_connection_hedges_at_the_suspicion_and_is_cut_at_the_deadline(caplog) -> None:
    """One watchdog target per probe, two stages: at ``suspect_after`` the node's safe reads in flight run again
    elsewhere, at the deadline the probe itself is cut; a probe that answers in time leaves nothing armed."""
    from resilience.db.monitor import NodeMonitor
    from resilience.db.watchdog import watchdog

    nodes = monitored()
    monitor = NodeMonitor(nodes, deadline=1.0)
    try:
        assert monitor._query_once(REPLICA, "SELECT 1", "probe") == [(1,)]  # the connection is open from here on
        assert not [t for t in watchdog._armed.values() if t.label.startswith(REPLICA)]
        state = context.RoutingState(safe_method=True)
        thread, outcome = _sleep_on_replica_in(state)
        time.sleep(0.5)  # the read is in flight
        started = time.monotonic()
        with pytest.raises(psycopg.Error):
            monitor._query_once(REPLICA, "SELECT pg_sleep(20)", "probe")
        took = time.monotonic() - started
        thread.join(timeout=5)
        assert 0.9 <= took < 3, took  # cut at the deadline (1 s), not at the suspicion
        # Hedged at the suspicion (0.25 s), long before the probe's cut: the read failed and may run elsewhere,
        assert isinstance(outcome.get("error"), DatabaseError) and outcome["seconds"] < 0.5 + took
        assert REPLICA in state.failed
        assert nodes.state(REPLICA).reachable  # ... and a probe that was cut marks nothing down by itself (_probe does)
        assert "cancelling the statement" not in caplog.text and "cancel did not take" not in caplog.text
        assert "query deadline passed on replica_1 (probe): cutting the connection off" in caplog.text
    finally:
        monitor.close()
