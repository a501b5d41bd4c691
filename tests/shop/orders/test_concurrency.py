"""Checkout under real concurrency: real threads, real PostgreSQL row locks, committed transactions."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from resilience.idempotency.services import idempotent_call
from shop.cart.services import cart_add_item
from shop.catalog.exceptions import OutOfStockError
from shop.catalog.models import Product
from shop.orders.models import Order
from shop.orders.services import order_place
from tests.conftest import client_for
from tests.factories import ProductFactory, UserFactory
from tests.helpers import run_together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def _unexpected(outcomes, allowed: tuple[type[BaseException], ...] = ()) -> list[BaseException]:
    return [value for kind, value in outcomes if kind == "error" and not isinstance(value, allowed)]


def test_last_units_sold_once_under_concurrent_checkouts():
    product = ProductFactory(stock=20)
    buyers = UserFactory.create_batch(20)
    for buyer in buyers:
        cart_add_item(user=buyer, product_id=product.id, quantity=1)
    Product.objects.filter(id=product.id).update(stock=5)  # the last five units

    outcomes = run_together([lambda buyer=buyer: order_place(user=buyer) for buyer in buyers])

    assert _unexpected(outcomes, (OutOfStockError,)) == []
    placed = [value for kind, value in outcomes if kind == "ok"]
    refused = [value for kind, value in outcomes if kind == "error"]
    assert len(placed) == 5
    assert len(refused) == 15
    assert Order.objects.count() == 5
    product.refresh_from_db()
    assert product.stock == 0


def test_concurrent_retries_with_one_idempotency_key_place_one_order():
    user = UserFactory()
    product = ProductFactory(stock=10)
    cart_add_item(user=user, product_id=product.id, quantity=2)

    def checkout() -> Any:
        return idempotent_call(
            user=user,
            scope="orders.create",
            key="one-key",
            request_body={},
            handler=lambda: (201, {"id": order_place(user=user).id}),
        )

    outcomes = run_together([checkout] * 10)

    assert _unexpected(outcomes) == []
    results = [value for _, value in outcomes]
    assert {(result.status, result.body["id"]) for result in results} == {(201, Order.objects.get().id)}
    assert sum(result.replayed for result in results) == 9
    product.refresh_from_db()
    assert product.stock == 8


def test_concurrent_api_retries_with_one_idempotency_key_return_identical_responses():
    user = UserFactory()
    product = ProductFactory(stock=10)
    cart_add_item(user=user, product_id=product.id, quantity=1)
    clients = [client_for(user) for _ in range(10)]

    def post(client: APIClient) -> Any:
        return client.post("/api/orders/", format="json", HTTP_IDEMPOTENCY_KEY="api-key")

    outcomes = run_together([lambda client=client: post(client) for client in clients])

    assert _unexpected(outcomes) == []
    responses = [value for _, value in outcomes]
    assert {response.status_code for response in responses} == {201}
    assert len({response.content for response in responses}) == 1  # every replay is the first body, byte for byte
    assert responses[0].json()["id"] == Order.objects.get().id
    assert sum(response.get("Idempotent-Replayed") == "true" for response in responses) == 9
    assert Order.objects.count() == 1
    product.refresh_from_db()
    assert product.stock == 9


def test_overlapping_carts_in_opposite_orders_never_deadlock():
    first, second = ProductFactory(stock=1000), ProductFactory(stock=1000)
    alice, bob = UserFactory(), UserFactory()
    rounds = 25

    def shop(user, products) -> Any:
        for product in products:  # opposite order: alice's line ids go first->second, bob's second->first
            cart_add_item(user=user, product_id=product.id, quantity=1)
        return order_place(user=user)

    for _ in range(rounds):
        outcomes = run_together([lambda: shop(alice, (first, second)), lambda: shop(bob, (second, first))])
        assert _unexpected(outcomes, (OutOfStockError,)) == []

    assert Order.objects.count() == 2 * rounds
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.stock == second.stock == 1000 - 2 * rounds
