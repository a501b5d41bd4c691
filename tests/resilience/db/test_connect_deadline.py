"""A request's connection attempt is bounded below libpq's 2 s floor: a hung node (it accepts the TCP connection,
then never answers) is given up on at the deadline; a live node connects as usual."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError, connections

from resilience.db.backend.connect import DeadlineConnection, connect_deadline
from resilience.db.nodes import PRIMARY, registry

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]
LIBPQ_FLOOR = 2.0


@pytest.fixture
def hung_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel's backlog completes the handshake; nobody ever answers
        yield listener.getsockname()[1]


def test_a_connection_to_a_hung_node_gives_up_at_the_deadline(hung_listener):
    params = {**connections[PRIMARY].get_connection_params(), "host": "127.0.0.1", "port": hung_listener}
    params["connect_timeout"] = 10
    token = connect_deadline.set(0.2)
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            DeadlineConnection.connect(**params)
    finally:
        connect_deadline.reset(token)
    assert time.monotonic() - started < LIBPQ_FLOOR - 0.5  # well before libpq's (and psycopg's) 2 s minimum


def test_without_a_deadline_psycopg_keeps_its_own_timeout(hung_listener):
    params = {**connections[PRIMARY].get_connection_params(), "host": "127.0.0.1", "port": hung_listener}
    params["connect_timeout"] = 1  # psycopg makes it 2 s
    started = time.monotonic()
    with pytest.raises(psycopg.errors.ConnectionTimeout):
        DeadlineConnection.connect(**params)
    assert time.monotonic() - started >= LIBPQ_FLOOR - 0.1


def test_a_request_connection_to_a_live_node_connects_and_one_to_a_hung_node_marks_it_down(hung_listener):
    with connections[REPLICA].cursor() as cursor:  # through Django's backend: the deadline is in the way only if due
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    node = connections[REPLICA]
    node.close()
    original = node.settings_dict["HOST"], node.settings_dict["PORT"]
    node.settings_dict.update(HOST="127.0.0.1", PORT=str(hung_listener))
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError), node.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        node.settings_dict.update(HOST=original[0], PORT=original[1])
        node.close()
    assert time.monotonic() - started < LIBPQ_FLOOR - 0.5
    assert not registry().state(REPLICA).reachable
