"""Checkout with a payment gateway: paid, declined, or kept pending_payment when the gateway fails or hangs."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection

from resilience.breakers.breaker import State
from resilience.breakers.registry import breaker_get
from resilience.idempotency.models import IdempotencyRecord
from shop.cart.services import cart_add_item
from shop.catalog.models import Product
from shop.orders.models import Order
from shop.payments.gateways import gateway_reset
from shop.payments.models import Payment
from tests.conftest import client_for
from tests.factories import ProductFactory, UserFactory
from tests.helpers import poll, run_together
from tests.shop.payments.conftest import BREAKER_FAILURES, READ_TIMEOUT

ORDERS = "/api/orders/"


def _checkout(client, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(ORDERS, format="json", **headers)


def _fill_cart(user, quantity: int = 2) -> Product:
    product = ProductFactory(price=Decimal("4.00"), stock=10)
    cart_add_item(user=user, product_id=product.id, quantity=quantity)
    return product


def db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def retries_polling(since) -> int:
    """Sessions opened since ``since`` whose latest statement read an idempotency record."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_start >= %s AND query LIKE 'SELECT %%' AND query LIKE %s",
            [since, f"%{IdempotencyRecord._meta.db_table}%"],
        )
        return cursor.fetchone()[0]


def _stock(product: Product) -> int:
    product.refresh_from_db()
    return product.stock


@pytest.mark.django_db
def test_gateway_succeeds_order_paid(gateway, auth_client, user):
    product = _fill_cart(user)
    response = _checkout(auth_client)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "paid"
    assert body["payment"] == {"status": "succeeded", "message": "Paid."}
    [charge] = gateway.charges()
    payment = Payment.objects.get(order_id=body["id"])
    assert charge["idempotency_key"] == payment.idempotency_key and charge["amount"] == "8.00"
    assert payment.gateway_reference == charge["id"] and payment.attempts == 1
    assert _stock(product) == 8
    assert auth_client.get(f"{ORDERS}{body['id']}/").json()["payment"]["status"] == "succeeded"


@pytest.mark.django_db
def test_gateway_declines_order_payment_failed_and_stock_returned(gateway, auth_client, user):
    gateway.set_mode("decline")
    product = _fill_cart(user)
    body = _checkout(auth_client).json()
    assert body["status"] == "payment_failed"
    assert body["payment"]["status"] == "declined"
    assert "insufficient funds" in body["payment"]["message"]
    assert _stock(product) == 10
    assert breaker_get("payment_gateway").state is State.CLOSED


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_gateway_failing_or_hanging_checkout_still_201_pending_payment(gateway, auth_client, user, mode):
    gateway.set_mode(mode)
    product = _fill_cart(user)
    started = time.monotonic()
    response = _checkout(auth_client)
    assert time.monotonic() - started < READ_TIMEOUT + 2.0
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending_payment"
    assert body["payment"]["status"] == "pending"
    assert "charged automatically later" in body["payment"]["message"]
    assert "127.0.0.1" not in response.content.decode()  # no internal detail for the client
    payment = Payment.objects.get(order_id=body["id"])
    assert payment.attempts == 1 and payment.last_error
    assert _stock(product) == 8


@pytest.mark.django_db
def test_after_the_breaker_opens_checkout_does_not_call_the_gateway(gateway, user):
    gateway.set_mode("hang")
    client = client_for(user)
    for _ in range(BREAKER_FAILURES):
        _fill_cart(user, quantity=1)
        assert _checkout(client).json()["status"] == "pending_payment"
    assert breaker_get("payment_gateway").state is State.OPEN
    calls = gateway.calls()
    _fill_cart(user, quantity=1)
    response = _checkout(client)
    assert response.status_code == 201 and response.json()["status"] == "pending_payment"
    assert gateway.calls() == calls  # not called, so no timeout paid
    order = Order.objects.get(pk=response.json()["id"])
    assert order.payments.get().attempts == 0  # skipped, not attempted


@pytest.mark.django_db
def test_idempotent_replay_is_the_final_response_and_charges_once(gateway, auth_client, user):
    _fill_cart(user)
    first = _checkout(auth_client, key="pay-once")
    replay = _checkout(auth_client, key="pay-once")
    assert first.json()["status"] == "paid"
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert gateway.charge_count() == 1
    assert IdempotencyRecord.objects.get(key="pay-once").complete


@pytest.mark.django_db
def test_database_failing_after_the_order_committed_answers_the_order_as_placed(
    gateway, auth_client, user, monkeypatch
):
    def broken(*, order_id: int) -> str:
        raise DatabaseError("primary went away")

    monkeypatch.setattr("shop.orders.checkout.payment_collect", broken)
    _fill_cart(user)
    response = _checkout(auth_client, key="db-gone")
    assert response.status_code == 201
    assert response.json()["status"] == "pending_payment"


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_concurrent_retries_while_the_gateway_is_slow_all_get_the_final_body(gateway, settings):
    """The first request holds the key while the gateway hangs; retries wait for its final answer (paid),
    none replays the provisional pending_payment body, and the card is charged once."""
    settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS = (1.0, 10.0)
    gateway_reset()
    user = UserFactory()
    _fill_cart(user)
    gateway.set_mode("hang")
    since = db_now()  # the requests' threads open their own sessions after this
    waited: list[tuple[int, float] | AssertionError] = []

    def release_once_the_retries_wait() -> None:
        """Release the hung charge once it is at the gateway and the five retries are polling the record (their
        sessions' latest statement read it): the answer then is "succeeded"."""
        try:
            waited.append(poll(lambda: gateway.calls() >= 1 and retries_polling(since) >= 5, timeout=8, interval=0.05))
        except AssertionError as exc:
            waited.append(exc)
        finally:
            gateway.set_mode("succeed")  # within the 10 s read timeout: the first request gets the answer
            connection.close()

    releaser = threading.Thread(target=release_once_the_retries_wait, daemon=True)
    releaser.start()
    clients = [client_for(user) for _ in range(6)]
    outcomes = run_together([lambda client=client: _checkout(client, key="slow-key") for client in clients])
    releaser.join(timeout=30)
    assert waited and not isinstance(waited[0], AssertionError), waited
    responses = [value for kind, value in outcomes if kind == "ok"]
    assert len(responses) == 6, outcomes
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert responses[0].json()["status"] == "paid"
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 5
    assert gateway.charge_count() == 1 and Order.objects.count() == 1
