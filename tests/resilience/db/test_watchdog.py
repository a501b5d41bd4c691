"""The query watchdog against real PostgreSQL sessions: a query still running at its deadline is cut off (the
client gets an error at once instead of waiting), one that finished in time is left alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.db import connections

from resilience.db.nodes import PRIMARY
from resilience.db.watchdog import CANCEL_GRACE, QueryWatchdog

pytestmark = pytest.mark.django_db  # the test database exists (the sessions below are not Django's)

SLEEP = 30  # a query far longer than any deadline here: cut off, it ends in well under that


@pytest.fixture
def session() -> Iterator[Callable[[], psycopg.Connection]]:
    """Opens autocommit sessions on the test primary; each is closed, and its server process ended, afterwards."""
    opened: list[tuple[psycopg.Connection, int]] = []

    def open_session() -> psycopg.Connection:
        conn = psycopg.connect(**connections[PRIMARY].get_connection_params(), autocommit=True)
        opened.append((conn, conn.info.backend_pid))
        return conn

    yield open_session
    with psycopg.connect(**connections[PRIMARY].get_connection_params(), autocommit=True) as admin:
        for conn, pid in opened:
            conn.close()
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])  # a cut-off pg_sleep runs on otherwise


def test_a_query_past_its_deadline_is_cut_off(session, caplog) -> None:
    conn = session()
    watchdog = QueryWatchdog()
    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    assert time.monotonic() - started < SLEEP / 2  # cut off, not waited out
    assert conn.broken or conn.closed
    assert "query deadline passed on primary (test)" in caplog.text


def test_a_query_that_finished_in_time_keeps_its_connection(session, caplog) -> None:
    conn = session()
    watchdog = QueryWatchdog()
    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    watchdog.disarm(ticket)
    time.sleep(0.6)  # the deadline passes (no event to wait for: nothing is supposed to happen)
    assert conn.execute("SELECT 2").fetchone() == (2,)
    assert "query deadline passed" not in caplog.text


def test_an_earlier_deadline_armed_later_is_not_kept_waiting_behind_a_later_one(session) -> None:
    patient, hurried = session(), session()
    watchdog = QueryWatchdog()
    long_ticket = watchdog.arm(patient.pgconn.socket, 600, "patient")
    # Let its thread start and settle on that deadline (were it slower, this test would prove less, never fail).
    time.sleep(0.3)
    ticket = watchdog.arm(hurried.pgconn.socket, 0.3, "hurried")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        hurried.execute(f"SELECT pg_sleep({SLEEP})")
    assert time.monotonic() - started < SLEEP / 2
    watchdog.disarm(ticket)
    watchdog.disarm(long_ticket)
    assert patient.execute("SELECT 1").fetchone() == (1,)  # only the query past its deadline was cut


def test_every_query_past_its_deadline_is_cut_off_one_watchdog_for_all(session) -> None:
    conns = [session() for _ in range(4)]
    watchdog = QueryWatchdog()
    tickets = [watchdog.arm(conn.pgconn.socket, 0.2 + 0.1 * n, f"session {n}") for n, conn in enumerate(conns)]
    started = time.monotonic()
    # The sleeps run concurrently, each in its own thread, as each worker thread runs its own query.
    errors: list[BaseException | None] = [None] * len(conns)

    def run(n: int) -> None:
        try:
            conns[n].execute(f"SELECT pg_sleep({SLEEP})")
        except psycopg.OperationalError as exc:
            errors[n] = exc

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SLEEP + 10)
    for ticket in tickets:
        watchdog.disarm(ticket)
    assert all(isinstance(error, psycopg.OperationalError) for error in errors), errors
    assert time.monotonic() - started < SLEEP / 2


def test_a_cut_leaves_alone_a_socket_that_now_leads_to_another_server() -> None:
    """The fd of a cut connection may have been reused by a new connection to another node before the cut:
    the server port it was armed with tells them apart (seen: a replica's kill cutting a fresh primary socket)."""
    import socket

    from resilience.db.watchdog import QueryWatchdog

    with socket.socket() as first, socket.socket() as second:
        for listener in (first, second):
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
        client = socket.create_connection(second.getsockname())  # what the reused fd leads to now
        try:
            QueryWatchdog._shut(client.fileno(), "replica_1", port=first.getsockname()[1])
            client.sendall(b"still open")  # not shut down: it leads to the other server
            QueryWatchdog._shut(client.fileno(), "replica_1", port=second.getsockname()[1])
            try:
                client.sendall(b"x")
                shut = False
            except OSError:
                shut = True
            assert shut
        finally:
            client.close()


def test_a_deadline_due_while_the_process_was_frozen_gets_its_time_again_once(session, caplog) -> None:
    """The watchdog's own thread kept from running past a deadline (as a frozen Lambda environment is): the
    query is given its whole time again instead of being cut at the thaw; a real hang is still cut after that."""
    conn = session()
    watchdog = QueryWatchdog()
    started = time.monotonic()
    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)")
    with watchdog._lock:  # the watchdog's thread cannot run: frozen, from its point of view
        time.sleep(1.5)
    time.sleep(0.1)  # thawed: the deadline is 1.2 s past, yet nothing is cut
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert watchdog.freezes == 1 and "query deadline passed" not in caplog.text
    with pytest.raises(psycopg.OperationalError):  # still hung after its second 0.3 s: cut
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    assert time.monotonic() - started < 1.5 + 0.1 + 0.3 + 2.0
    assert "query deadline passed on primary (test)" in caplog.text


def test_a_target_with_a_cancel_is_cancelled_first_and_cut_only_if_that_does_not_take(session, caplog) -> None:
    """The cancel is asked for at the deadline; a statement still running after the grace is cut."""
    conn = session()
    watchdog = QueryWatchdog()
    asked = []
    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)", cancel=lambda: asked.append(True) or True)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):  # the cancel above sends nothing: it does not take
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    elapsed = time.monotonic() - started
    assert asked == [True]
    assert 0.3 + CANCEL_GRACE * 0.9 <= elapsed < SLEEP / 2  # cut after the grace, not at the deadline
    assert "query deadline passed on primary (test): cancelling the statement" in caplog.text
    assert "and its cancel did not take: cutting the connection off" in caplog.text


def test_a_cancel_that_takes_leaves_the_connection_usable(session, caplog) -> None:
    conn = session()
    watchdog = QueryWatchdog()

    def cancel() -> bool:
        threading.Thread(target=conn.cancel_safe).start()  # off the watchdog's thread, as the backend's pool does
        return True

    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)", cancel=cancel)
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    time.sleep(CANCEL_GRACE + 0.2)  # the grace passes: a disarmed cut never comes
    assert conn.execute("SELECT 2").fetchone() == (2,)
    assert "cutting the connection off" not in caplog.text


def test_a_cancel_not_worth_sending_means_the_cut_comes_at_the_deadline(session) -> None:
    conn = session()
    watchdog = QueryWatchdog()
    ticket = watchdog.arm(conn.pgconn.socket, 0.3, "primary (test)", cancel=lambda: False)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    assert time.monotonic() - started < 0.3 + CANCEL_GRACE * 0.9


def test_queries_that_end_in_time_do_not_wake_the_watchdog_one_by_one() -> None:
    """A disarmed ticket stays in the heap until its deadline; the thread drops every such one it finds on top,
    so a burst of queries that all ended in time costs a wake or two, not one per query."""
    watchdog = QueryWatchdog()
    watchdog.disarm(watchdog.call_after(60, lambda: None, "start the thread"))
    time.sleep(0.05)
    woken = watchdog.wakes
    for _ in range(2000):
        watchdog.disarm(watchdog.arm(-1, 0.2, "primary (test)"))
    time.sleep(0.6)  # every deadline has passed
    assert watchdog.wakes - woken <= 5, watchdog.wakes - woken
    fired: list[bool] = []
    watchdog.call_after(0.05, lambda: fired.append(True), "still armed")
    deadline = time.monotonic() + 5
    while not fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fired  # what is still armed is still kept


def test_a_two_stage_target_frozen_in_its_grace_gets_both_stages_time_again(session, caplog) -> None:
    """The probe's target (first stage at 0.2 s, the cut 0.3 s later): frozen after its first stage, it gets its
    whole 0.5 s again at the thaw, not only the first stage's 0.2 s; a real hang is still cut after that."""
    conn = session()
    watchdog = QueryWatchdog()
    stages: list[float] = []
    started = time.monotonic()
    ticket = watchdog.arm(
        conn.pgconn.socket,
        0.2,
        "primary (probe)",
        cancel=lambda: stages.append(time.monotonic() - started) or True,
        grace=0.3,
        announced=False,
    )
    time.sleep(0.3)  # the first stage has run
    assert len(stages) == 1
    with watchdog._lock:  # then the watchdog's thread is kept from running: frozen, from its point of view
        time.sleep(1.5)
    thawed = time.monotonic()
    time.sleep(0.3)  # past the first stage's 0.2 s again, within the whole 0.5 s: not cut
    assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):  # still hung: cut, at the end of its second 0.5 s
        conn.execute(f"SELECT pg_sleep({SLEEP})")
    watchdog.disarm(ticket)
    assert 0.45 <= time.monotonic() - thawed < 0.5 + 2.0
    assert watchdog.freezes == 1 and len(stages) == 1
    assert "cancelling the statement" not in caplog.text and "cancel did not take" not in caplog.text
