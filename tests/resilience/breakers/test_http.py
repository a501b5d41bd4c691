"""The guarded HTTP client against a real local HTTP server (the fake gateway) and real sockets."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import closing

import pytest

from devstack.fake_gateway import FakeGateway
from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, State
from resilience.breakers.exceptions import (
    ExternalCircuitOpen,
    ExternalClientError,
    ExternalConnectionError,
    ExternalServerError,
    ExternalTimeout,
)
from resilience.breakers.http import GuardedHttpClient

READ_TIMEOUT = 0.5
CHARGE = {"amount": "5.00", "currency": "USD", "reference": "order-1"}


@pytest.fixture
def server():
    with FakeGateway(hang_seconds=10) as gateway:
        yield gateway


def _client(url: str, threshold: int = 3) -> GuardedHttpClient:
    breaker = CircuitBreaker("http-test", BreakerConfig(failure_threshold=threshold, reset_timeout=30))
    return GuardedHttpClient(
        service="http-test", base_url=url, breaker=breaker, connect_timeout=1.0, read_timeout=READ_TIMEOUT
    )


def test_expected_answer_is_parsed_json(server):
    result = _client(server.url).request(
        "POST", "/charges", json_body=CHARGE, headers={"Idempotency-Key": "k1"}, expected=(201,)
    )
    assert result.status == 201
    assert result.body["status"] == "succeeded" and result.body["amount"] == "5.00"
    assert result.headers["Content-Type"] == "application/json"


def test_4xx_is_a_client_error_that_never_opens_the_breaker(server):
    client = _client(server.url, threshold=1)
    for _ in range(3):
        with pytest.raises(ExternalClientError) as excinfo:
            client.request("POST", "/charges", json_body=CHARGE, expected=(201,))  # no Idempotency-Key: 400
        assert excinfo.value.status == 400
        assert "Idempotency-Key" in excinfo.value.body["message"]
    assert client.breaker.state is State.CLOSED


def test_5xx_counts_and_opens_then_calls_skip_the_network(server):
    server.set_mode("fail")
    client = _client(server.url, threshold=3)
    for _ in range(3):
        with pytest.raises(ExternalServerError) as excinfo:
            client.request("GET", "/charges/k1")
        assert excinfo.value.status == 500
    calls = server.calls()
    with pytest.raises(ExternalCircuitOpen) as excinfo:
        client.request("GET", "/charges/k1")
    assert server.calls() == calls  # not sent: the open breaker answered without the network
    assert not excinfo.value.forced and excinfo.value.retry_after > 0


def test_hung_server_costs_one_read_timeout(server):
    server.set_mode("hang")
    client = _client(server.url)
    started = time.monotonic()
    with pytest.raises(ExternalTimeout):
        client.request("GET", "/charges/k1")
    waited = time.monotonic() - started
    assert READ_TIMEOUT <= waited < READ_TIMEOUT + 1.0


def test_refused_connection_fails_at_once():
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        client = _client(f"http://127.0.0.1:{sock.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(ExternalConnectionError):
            client.request("GET", "/")
        assert time.monotonic() - started < 1.0


@pytest.mark.timeout(60)
def test_concurrent_calls_to_a_hung_server_wait_in_parallel_not_in_line(server):
    """Eight threads against a hung server: all time out together (one read timeout), none queues behind
    another (a breaker holding its lock for the call, like pybreaker's, would make this take 8 timeouts)."""
    server.set_mode("hang")
    client = _client(server.url, threshold=100)
    threads = 8
    start = threading.Barrier(threads, timeout=10)
    waited: list[float] = []

    def call() -> None:
        start.wait()
        began = time.monotonic()
        with pytest.raises(ExternalTimeout):
            client.request("GET", "/charges/k1")
        waited.append(time.monotonic() - began)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(waited) == threads
    assert time.monotonic() - began < READ_TIMEOUT * 4  # serialized it would be 8 x 0.5 s
