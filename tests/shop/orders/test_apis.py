from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from resilience.idempotency.models import IdempotencyRecord
from shop.cart.models import CartItem
from shop.cart.services import cart_add_item
from shop.catalog.models import Product
from shop.orders.models import Order, OrderStatus
from shop.orders.services import order_place
from tests.conftest import client_for
from tests.factories import ProductFactory, UserFactory
from tests.helpers import assert_error, assert_validation_error

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"
ORDER_KEYS = {"id", "status", "items", "total", "currency", "created_at"}


def _checkout(client, key: str | None = None, **kwargs):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(ORDERS, format="json", **headers, **kwargs)


def _stock(product: Product) -> int:
    product.refresh_from_db()
    return product.stock


# checkout


def test_checkout_returns_201_with_order_shape(auth_client, user):
    product = ProductFactory(price=Decimal("4.50"), sku="MUG-1", name="Mug", stock=10)
    cart_add_item(user=user, product_id=product.id, quantity=3)

    response = _checkout(auth_client)

    assert response.status_code == 201
    body = response.json()
    assert ORDER_KEYS <= set(body)
    order = Order.objects.get(user=user)
    assert body["id"] == order.id
    assert body["status"] == "pending_payment"
    assert body["total"] == "13.50"
    assert body["currency"] == "USD"
    assert isinstance(body["created_at"], str) and body["created_at"]
    [line] = body["items"]
    assert line["sku"] == "MUG-1"
    assert line["name"] == "Mug"
    assert line["unit_price"] == "4.50"
    assert line["quantity"] == 3
    assert line["line_total"] == "13.50"
    assert _stock(product) == 7
    assert auth_client.get("/api/cart/").json()["items"] == []
    assert "Idempotent-Replayed" not in response


def test_checkout_empty_cart_is_cart_empty(auth_client):
    assert_error(_checkout(auth_client), 400, "cart_empty")
    assert not Order.objects.exists()


def test_checkout_short_item_is_out_of_stock_naming_it(auth_client, user):
    plenty = ProductFactory(stock=10)
    short = ProductFactory(stock=5, sku="SHORT-1")
    cart_add_item(user=user, product_id=plenty.id, quantity=1)
    cart_add_item(user=user, product_id=short.id, quantity=4)
    Product.objects.filter(id=short.id).update(stock=2)

    error = assert_error(_checkout(auth_client), 409, "out_of_stock")

    assert error["detail"] == {"items": [{"product_id": short.id, "sku": "SHORT-1", "requested": 4, "available": 2}]}
    assert not Order.objects.exists()
    assert _stock(plenty) == 10
    assert CartItem.objects.filter(cart__user=user).count() == 2


def test_checkout_unknown_body_field_is_validation_error(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.post(ORDERS, {"total": "0.01"}, format="json")
    assert_validation_error(response, "total")
    assert not Order.objects.exists()


def test_checkout_malformed_json_is_parse_error(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert_error(auth_client.post(ORDERS, data="{", content_type="application/json"), 400, "parse_error")
    assert not Order.objects.exists()


def test_checkout_without_token_is_not_authenticated(api_client, db):
    response = _checkout(api_client)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


# idempotency


def test_checkout_replay_with_same_key_returns_same_response_and_one_order(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=2)
    first = _checkout(auth_client, "key-1")
    replay = _checkout(auth_client, "key-1")

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert Order.objects.filter(user=user).count() == 1
    assert _stock(product) == 8


def test_checkout_replay_with_empty_json_body_matches_first_without_body(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    first = _checkout(auth_client, "key-2")
    replay = auth_client.post(ORDERS, {}, format="json", HTTP_IDEMPOTENCY_KEY="key-2")
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]


def test_checkout_new_key_places_new_order(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert _checkout(auth_client, "key-a").status_code == 201
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert _checkout(auth_client, "key-b").status_code == 201
    assert Order.objects.filter(user=user).count() == 2


def test_checkout_same_key_by_two_users_makes_two_orders(product):
    alice, bob = UserFactory(), UserFactory()
    for buyer in (alice, bob):
        cart_add_item(user=buyer, product_id=product.id, quantity=1)
    first = _checkout(client_for(alice), "shared-key")
    second = _checkout(client_for(bob), "shared-key")
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert first.json()["id"] != second.json()["id"]
    assert Order.objects.filter(user=alice).count() == 1
    assert Order.objects.filter(user=bob).count() == 1


def test_checkout_key_older_than_24h_is_treated_as_new(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    first = _checkout(auth_client, "old-key")
    IdempotencyRecord.objects.filter(user=user, key="old-key").update(
        created_at=timezone.now() - timedelta(hours=24, minutes=1)
    )
    cart_add_item(user=user, product_id=product.id, quantity=1)

    second = _checkout(auth_client, "old-key")

    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert second.json()["id"] != first.json()["id"]
    assert Order.objects.filter(user=user).count() == 2


def test_checkout_key_younger_than_24h_still_replays(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    first = _checkout(auth_client, "recent-key")
    IdempotencyRecord.objects.filter(user=user, key="recent-key").update(
        created_at=timezone.now() - timedelta(hours=23)
    )
    replay = _checkout(auth_client, "recent-key")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]


def test_checkout_error_is_not_stored_so_same_key_succeeds_later(auth_client, user):
    product = ProductFactory(stock=5)
    cart_add_item(user=user, product_id=product.id, quantity=3)
    Product.objects.filter(id=product.id).update(stock=1)

    failed = _checkout(auth_client, "retry-key")
    assert_error(failed, 409, "out_of_stock")
    assert not IdempotencyRecord.objects.filter(user=user).exists()

    Product.objects.filter(id=product.id).update(stock=10)
    succeeded = _checkout(auth_client, "retry-key")

    assert succeeded.status_code == 201
    assert "Idempotent-Replayed" not in succeeded
    assert Order.objects.filter(user=user).count() == 1
    assert _stock(product) == 7


def test_checkout_cart_empty_with_key_is_not_stored(auth_client, user, product):
    assert_error(_checkout(auth_client, "empty-first"), 400, "cart_empty")
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert _checkout(auth_client, "empty-first").status_code == 201


@pytest.mark.parametrize("key", ["k" * 300, "k" * 256, "has space", "tab\tkey", ""])
def test_checkout_bad_idempotency_key_is_validation_error(auth_client, user, product, key):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert_validation_error(_checkout(auth_client, key), "Idempotency-Key")
    assert not Order.objects.exists()


def test_checkout_idempotency_key_of_255_visible_characters_is_accepted(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert _checkout(auth_client, "k" * 254 + "~").status_code == 201


# list, detail, cancel


def _place(user, product, quantity=1):
    cart_add_item(user=user, product_id=product.id, quantity=quantity)
    return order_place(user=user)


def test_orders_list_returns_own_orders_newest_first(auth_client, user, other_user, product):
    older, newer = _place(user, product), _place(user, product)
    _place(other_user, product)
    response = auth_client.get(ORDERS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert [order["id"] for order in body["results"]] == [newer.id, older.id]
    assert ORDER_KEYS <= set(body["results"][0])


@pytest.mark.parametrize(("params", "status"), [({"page_size": "101"}, 400), ({"page": "5"}, 404)])
def test_orders_list_bad_page_is_refused(auth_client, user, product, params, status):
    _place(user, product)
    assert auth_client.get(ORDERS, params).status_code == status


def test_orders_list_without_token_is_not_authenticated(api_client, db):
    assert_error(api_client.get(ORDERS), 401, "not_authenticated")


def test_order_detail_returns_order(auth_client, user, product):
    order = _place(user, product, quantity=2)
    response = auth_client.get(f"{ORDERS}{order.id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == order.id
    assert body["status"] == "pending_payment"
    assert body["total"] == str(order.total)
    assert len(body["items"]) == 1


def test_order_detail_of_other_users_order_is_not_found(auth_client, other_user, product):
    order = _place(other_user, product)
    assert_error(auth_client.get(f"{ORDERS}{order.id}/"), 404, "not_found")


@pytest.mark.parametrize("order_id", ["987654321", "99999999999999999999999999999"])
def test_order_detail_unknown_id_is_not_found(auth_client, order_id):
    assert_error(auth_client.get(f"{ORDERS}{order_id}/"), 404, "not_found")


def test_order_cancel_sets_cancelled_and_returns_stock(auth_client, user):
    product = ProductFactory(stock=5)
    order = _place(user, product, quantity=3)
    response = auth_client.post(f"{ORDERS}{order.id}/cancel/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == order.id
    assert body["status"] == "cancelled"
    assert _stock(product) == 5


def test_order_cancel_of_cancelled_order_is_not_cancellable(auth_client, user, product):
    order = _place(user, product, quantity=3)
    assert auth_client.post(f"{ORDERS}{order.id}/cancel/").status_code == 200
    error = assert_error(auth_client.post(f"{ORDERS}{order.id}/cancel/"), 409, "order_not_cancellable")
    assert error["detail"] == {"status": "cancelled"}
    assert _stock(product) == 10


def test_order_cancel_of_paid_order_is_not_cancellable(auth_client, user, product):
    order = _place(user, product, quantity=3)
    Order.objects.filter(id=order.id).update(status=OrderStatus.PAID)
    assert_error(auth_client.post(f"{ORDERS}{order.id}/cancel/"), 409, "order_not_cancellable")
    assert _stock(product) == 7


def test_order_cancel_of_other_users_order_is_not_found(auth_client, other_user, product):
    order = _place(other_user, product, quantity=3)
    assert_error(auth_client.post(f"{ORDERS}{order.id}/cancel/"), 404, "not_found")
    order.refresh_from_db()
    assert order.status == OrderStatus.PENDING_PAYMENT
    assert _stock(product) == 7


@pytest.mark.parametrize("order_id", ["987654321", "99999999999999999999999999999"])
def test_order_cancel_unknown_id_is_not_found(auth_client, order_id):
    assert_error(auth_client.post(f"{ORDERS}{order_id}/cancel/"), 404, "not_found")


def test_order_cancel_get_is_method_not_allowed(auth_client, user, product):
    order = _place(user, product)
    assert_error(auth_client.get(f"{ORDERS}{order.id}/cancel/"), 405, "method_not_allowed")


def test_checkout_replay_body_is_byte_identical(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    first = _checkout(auth_client, "bytes-key")
    replay = _checkout(auth_client, "bytes-key")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.content == first.content


@pytest.mark.parametrize("other_body", [{"note": "x"}, [1, 2], {"items": []}])
def test_checkout_used_key_with_another_body_is_mismatch_even_if_that_body_is_invalid(
    auth_client, user, product, other_body
):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert _checkout(auth_client, "used-key").status_code == 201
    response = auth_client.post(ORDERS, other_body, format="json", HTTP_IDEMPOTENCY_KEY="used-key")
    assert_error(response, 422, "idempotency_key_mismatch")
    assert Order.objects.filter(user=user).count() == 1


def test_checkout_new_key_with_invalid_body_is_validation_error_and_key_stays_free(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.post(ORDERS, {"note": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="fresh-key")
    assert_validation_error(response, "note")
    assert not IdempotencyRecord.objects.filter(key="fresh-key").exists()
    assert _checkout(auth_client, "fresh-key").status_code == 201


# what the schema states is what is enforced


def test_checkout_with_empty_json_object_body_is_accepted(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    assert auth_client.post(ORDERS, {}, format="json").status_code == 201


def test_checkout_body_that_is_not_json_is_unsupported_media_type(auth_client, user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.post(ORDERS, "a=1", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", ORDERS), ("post", ORDERS), ("get", f"{ORDERS}1/"), ("post", f"{ORDERS}1/cancel/")],
)
def test_order_operations_refuse_an_unknown_query_parameter(auth_client, user, product, method, path):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    response = getattr(auth_client, method)(f"{path}?status=paid", format="json")
    error = assert_validation_error(response, "status")
    assert error["detail"]["status"] == ["Unknown query parameter."]
    assert not Order.objects.exists()


@pytest.mark.parametrize("params", [{"page": ""}, {"page_size": "0"}, {"page_size": ""}])
def test_orders_list_refuses_an_empty_or_out_of_range_page_parameter(auth_client, params):
    assert_validation_error(auth_client.get(ORDERS, params), *params)
