"""The monitor's queries on libpq itself (resilience.db.libpq) against the real test primary: the same rows as
psycopg's cursor gives, psycopg's own error classes, and a connection cut off mid-query (what the watchdog does to
a hung node) fails at once as OperationalError with the connection broken."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connections

from resilience.db import libpq
from resilience.db.monitor import PRIMARY_PROBE, REPLICA_PROBE
from resilience.db.nodes import PRIMARY

pytestmark = pytest.mark.django_db  # the test database exists (the session below is not Django's)


@pytest.fixture
def conn() -> Iterator[psycopg.Connection]:
    params = connections[PRIMARY].get_connection_params()
    with psycopg.connect(**params, autocommit=True) as session:
        pid = session.info.backend_pid
        yield session
    with psycopg.connect(**params, autocommit=True) as admin:  # a cut-off pg_sleep would run on otherwise
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_values_come_back_as_psycopg_would_give_them(conn: psycopg.Connection) -> None:
    sql = "SELECT true, false, 7::int2, 70000::int4, 5000000000::int8, 1.5::numeric, 2.25::float8, 'x'::text, NULL"
    assert libpq.rows(conn, sql) == [(True, False, 7, 70000, 5000000000, 1.5, 2.25, "x", None)]
    assert libpq.rows(conn, "SELECT 1 WHERE false") == []
    assert libpq.rows(conn, "SELECT n FROM generate_series(1, 3) AS n") == [(1,), (2,), (3,)]


def test_the_probes_read_the_same_on_libpq_as_on_a_cursor(conn: psycopg.Connection) -> None:
    for sql in (PRIMARY_PROBE, REPLICA_PROBE):
        on_cursor = conn.execute(sql).fetchall()
        on_libpq = libpq.rows(conn, sql)
        assert [tuple(float(v) if hasattr(v, "as_tuple") else v for v in row) for row in on_cursor] == on_libpq


def test_a_server_error_is_psycopgs_own_class_and_the_connection_stays_usable(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        libpq.rows(conn, "SELECT * FROM no_such_table_here")
    assert not conn.broken
    assert libpq.rows(conn, "SELECT 1") == [(1,)]


def test_a_query_cut_off_by_its_socket_fails_at_once_with_the_connection_broken(conn: psycopg.Connection) -> None:
    def cut() -> None:
        time.sleep(0.3)
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=cut, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        libpq.rows(conn, "SELECT pg_sleep(30)")
    assert time.monotonic() - started < 10  # cut at 0.3 s, not the 30 s sleep
    assert conn.broken


def test_other_threads_run_while_a_query_waits(conn: psycopg.Connection) -> None:
    """libpq waits with the GIL released: the watchdog's thread (and every request's) keeps running meanwhile."""
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        libpq.rows(conn, "SELECT pg_sleep(0.5)")
    finally:
        stop.set()
        spinner.join()
    assert ticks > 50  # about 400 on a quiet machine; none at all if the wait held the GIL
