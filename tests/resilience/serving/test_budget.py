"""The time budget where a request waits: database statements (real PostgreSQL) and outgoing HTTP calls."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections, transaction

from core.request_id import current_request_id
from devstack.fake_gateway import FakeGateway
from resilience.breakers.breaker import BreakerConfig, CircuitBreaker
from resilience.breakers.exceptions import ExternalBudgetSpent, ExternalTimeout
from resilience.breakers.http import GuardedHttpClient
from resilience.db.exceptions import StatementBudgetError
from resilience.db.nodes import PRIMARY, registry
from resilience.serving.budget import budget_end, budget_remaining, budget_start
from resilience.serving.bulkheads import worker_bulkheads
from shop.catalog.models import Category


@pytest.fixture
def budget() -> Iterator[callable]:
    tokens = []

    def start(seconds: float, traffic_class: str = "catalog") -> None:
        tokens.append(budget_start(seconds, traffic_class))

    yield start
    for token in reversed(tokens):
        budget_end(token)


def _sleep(seconds: float) -> None:
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(30)
def test_a_statement_past_the_budget_is_cancelled_and_its_node_kept(budget):
    timeouts = worker_bulkheads().classes["catalog"].timeouts
    budget(0.3)
    started = time.monotonic()
    with pytest.raises(StatementBudgetError) as excinfo:
        _sleep(10)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 2.0  # the budget, plus a cancel request's round trip (never the statement's 10 s)
    assert excinfo.value.code == "request_timeout" and excinfo.value.http_status == 504
    assert excinfo.value.detail == {"traffic_class": "catalog", "budget_seconds": 0.3}
    assert budget_remaining() is None  # cut once: the rest of the request runs under the node deadlines only
    assert registry().may_connect(PRIMARY), "a cancelled statement says nothing about its node"
    with connections[PRIMARY].cursor() as cursor:  # the same connection, still usable
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert worker_bulkheads().classes["catalog"].timeouts == timeouts + 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(30)
def test_a_transaction_cut_by_the_budget_is_rolled_back(budget):
    budget(0.5, "checkout")
    with pytest.raises(StatementBudgetError), transaction.atomic(using=PRIMARY):
        Category.objects.using(PRIMARY).create(name="Cut short", slug="cut-short")
        _sleep(10)
    assert not Category.objects.using(PRIMARY).filter(slug="cut-short").exists()


@pytest.mark.django_db(transaction=True)
def test_a_statement_is_not_sent_once_the_budget_is_spent(budget):
    budget(0.0)
    with connections[PRIMARY].cursor() as cursor:
        started = time.monotonic()
        with pytest.raises(StatementBudgetError):
            cursor.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 0.5
        cursor.execute("SELECT 1")  # the budget was cut once; the error path may still use the database
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
def test_statements_within_the_budget_are_untouched(budget):
    budget(5.0)
    for _ in range(20):
        _sleep(0.01)
    assert budget_remaining() is not None and budget_remaining() > 4


def test_outside_a_request_there_is_no_budget():
    assert budget_remaining() is None


# --- outgoing calls --------------------------------------------------------------------------------------------


def _client(url: str, *, read_timeout: float = 5.0) -> GuardedHttpClient:
    breaker = CircuitBreaker("budget-test", BreakerConfig(failure_threshold=2, reset_timeout=30))
    return GuardedHttpClient(
        service="budget-test", base_url=url, breaker=breaker, connect_timeout=1.0, read_timeout=read_timeout
    )


@pytest.mark.timeout(30)
def test_a_call_to_a_hung_service_is_cut_at_the_budget_and_not_counted_against_it(budget):
    with FakeGateway(hang_seconds=20) as gateway:
        gateway.set_mode("hang")
        client = _client(gateway.url)
        for _ in range(3):  # more than the breaker's threshold: it must stay closed
            token = budget_start(0.3, "checkout")
            started = time.monotonic()
            try:
                with pytest.raises(ExternalBudgetSpent):
                    client.request("GET", "/charges/k1")
            finally:
                budget_end(token)
            assert time.monotonic() - started < 1.5
        snapshot = client.breaker.snapshot()
        assert snapshot["state"] == "closed" and snapshot["consecutive_failures"] == 0
        gateway.set_mode("succeed")


@pytest.mark.timeout(30)
def test_the_service_s_own_timeout_still_counts_when_the_budget_is_longer(budget):
    with FakeGateway(hang_seconds=20) as gateway:
        gateway.set_mode("hang")
        client = _client(gateway.url, read_timeout=0.3)
        budget(10.0, "checkout")
        with pytest.raises(ExternalTimeout) as excinfo:
            client.request("GET", "/charges/k1")
        assert not isinstance(excinfo.value, ExternalBudgetSpent)
        assert client.breaker.snapshot()["consecutive_failures"] == 1
        gateway.set_mode("succeed")


def test_no_call_is_made_once_the_budget_is_spent(budget):
    with FakeGateway() as gateway:
        client = _client(gateway.url)
        budget(0.0, "checkout")
        with pytest.raises(ExternalBudgetSpent):
            client.request("GET", "/charges/k1")
        assert gateway.calls() == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_request_id_goes_with_every_outgoing_call():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = _client(f"http://127.0.0.1:{server.server_address[1]}")
        token = current_request_id.set("req-42.a")
        try:
            client.request("GET", "/anything")
        finally:
            current_request_id.reset(token)
        client.request("GET", "/outside-a-request")
    finally:
        server.shutdown()
    assert _Recorder.seen[0].get("X-Request-ID") == "req-42.a"
    assert "X-Request-ID" not in _Recorder.seen[1]
