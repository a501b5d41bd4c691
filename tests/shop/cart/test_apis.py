from __future__ import annotations

from decimal import Decimal

import pytest

from shop.cart.models import CartItem
from shop.cart.services import cart_add_item
from tests.factories import ProductFactory
from tests.helpers import assert_error, assert_validation_error

pytestmark = pytest.mark.django_db

CART = "/api/cart/"
ITEMS = "/api/cart/items/"


def _add(client, product_id, quantity):
    return client.post(ITEMS, {"product_id": product_id, "quantity": quantity}, format="json")


def test_cart_get_empty_cart_shape(auth_client):
    response = auth_client.get(CART)
    assert response.status_code == 200
    assert response.json() == {"items": [], "total": "0.00", "currency": "USD"}


def test_cart_get_without_token_is_not_authenticated(api_client, db):
    response = api_client.get(CART)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_cart_add_returns_201_with_whole_cart(auth_client, user):
    mug = ProductFactory(price=Decimal("4.50"), name="Mug", stock=10)
    lamp = ProductFactory(price=Decimal("19.99"))
    cart_add_item(user=user, product_id=lamp.id, quantity=1)

    response = _add(auth_client, mug.id, 3)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"items", "total", "currency"}
    assert body["total"] == "33.49"
    assert body["currency"] == "USD"
    assert [item["product"]["id"] for item in body["items"]] == [lamp.id, mug.id]
    line = body["items"][1]
    assert set(line) >= {"id", "product", "quantity", "line_total"}
    assert line["id"] == CartItem.objects.get(cart__user=user, product=mug).id
    assert line["quantity"] == 3
    assert line["line_total"] == "13.50"
    assert {"id", "name", "price"} <= set(line["product"])
    assert line["product"]["name"] == "Mug"
    assert line["product"]["price"] == "4.50"


def test_cart_add_same_product_twice_merges_quantity(auth_client, product):
    _add(auth_client, product.id, 2)
    body = _add(auth_client, product.id, 3).json()
    assert len(body["items"]) == 1
    assert body["items"][0]["quantity"] == 5


def test_cart_add_more_than_stock_is_out_of_stock(auth_client, user):
    product = ProductFactory(stock=2, sku="LOW-1")
    response = _add(auth_client, product.id, 3)
    error = assert_error(response, 409, "out_of_stock")
    assert error["detail"] == {"items": [{"product_id": product.id, "sku": "LOW-1", "requested": 3, "available": 2}]}
    assert not CartItem.objects.filter(cart__user=user).exists()


@pytest.mark.parametrize("quantity", [0, -1, 10**30, "abc", 1.5, True, None, "", [1], {"n": 1}])
def test_cart_add_bad_quantity_is_validation_error(auth_client, user, product, quantity):
    assert_validation_error(_add(auth_client, product.id, quantity), "quantity")
    assert not CartItem.objects.filter(cart__user=user).exists()


def test_cart_add_quantity_over_line_limit_is_validation_error(auth_client, product):
    assert_validation_error(_add(auth_client, product.id, 1001), "quantity")


@pytest.mark.parametrize("product_id", [0, -5, 10**30, "abc", 1.5, True, None])
def test_cart_add_bad_product_id_is_validation_error(auth_client, product_id):
    assert_validation_error(_add(auth_client, product_id, 1), "product_id")


def test_cart_add_unknown_product_is_validation_error(auth_client):
    assert_validation_error(_add(auth_client, 987654321, 1), "product_id")


def test_cart_add_inactive_product_is_validation_error(auth_client, user):
    product = ProductFactory(is_active=False)
    assert_validation_error(_add(auth_client, product.id, 1), "product_id")
    assert not CartItem.objects.filter(cart__user=user).exists()


@pytest.mark.parametrize("field", ["product_id", "quantity"])
def test_cart_add_missing_field_is_validation_error(auth_client, product, field):
    body = {"product_id": product.id, "quantity": 1}
    del body[field]
    assert_validation_error(auth_client.post(ITEMS, body, format="json"), field)


def test_cart_add_unknown_field_is_validation_error(auth_client, user, product):
    response = auth_client.post(ITEMS, {"product_id": product.id, "quantity": 1, "price": "0.01"}, format="json")
    assert_validation_error(response, "price")
    assert not CartItem.objects.filter(cart__user=user).exists()


def test_cart_add_malformed_json_is_parse_error(auth_client):
    response = auth_client.post(ITEMS, data='{"product_id": 1, "quantity":', content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_cart_add_form_encoded_body_is_unsupported_media_type(auth_client, product):
    response = auth_client.post(ITEMS, data=f"product_id={product.id}&quantity=1", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_cart_patch_changes_quantity(auth_client, user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.patch(f"{ITEMS}{item.id}/", {"quantity": 4}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["items"][0]["quantity"] == 4
    assert body["items"][0]["line_total"] == str(product.price * 4)
    item.refresh_from_db()
    assert item.quantity == 4


@pytest.mark.parametrize("quantity", [0, -3, 10**30, "abc", 1.5, True, None])
def test_cart_patch_bad_quantity_is_validation_error(auth_client, user, product, quantity):
    item = cart_add_item(user=user, product_id=product.id, quantity=2)
    assert_validation_error(auth_client.patch(f"{ITEMS}{item.id}/", {"quantity": quantity}, format="json"), "quantity")
    item.refresh_from_db()
    assert item.quantity == 2


def test_cart_patch_missing_quantity_is_validation_error(auth_client, user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=2)
    assert_validation_error(auth_client.patch(f"{ITEMS}{item.id}/", {}, format="json"), "quantity")


def test_cart_patch_unknown_field_is_validation_error(auth_client, user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=2)
    response = auth_client.patch(f"{ITEMS}{item.id}/", {"quantity": 1, "product_id": 5}, format="json")
    assert_validation_error(response, "product_id")


def test_cart_patch_beyond_stock_is_out_of_stock(auth_client, user):
    product = ProductFactory(stock=3, sku="LOW-2")
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.patch(f"{ITEMS}{item.id}/", {"quantity": 4}, format="json")
    error = assert_error(response, 409, "out_of_stock")
    assert error["detail"]["items"] == [{"product_id": product.id, "sku": "LOW-2", "requested": 4, "available": 3}]


def test_cart_delete_returns_204_and_removes_line(auth_client, user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    response = auth_client.delete(f"{ITEMS}{item.id}/")
    assert response.status_code == 204
    assert response.content == b""
    assert auth_client.get(CART).json()["items"] == []


def test_cart_item_of_other_user_is_not_found(auth_client, other_user, product):
    item = cart_add_item(user=other_user, product_id=product.id, quantity=1)
    assert_error(auth_client.patch(f"{ITEMS}{item.id}/", {"quantity": 2}, format="json"), 404, "not_found")
    assert_error(auth_client.delete(f"{ITEMS}{item.id}/"), 404, "not_found")
    item.refresh_from_db()
    assert item.quantity == 1


@pytest.mark.parametrize("item_id", ["987654321", "99999999999999999999999999999"])
def test_cart_unknown_item_is_not_found(auth_client, item_id):
    assert_error(auth_client.patch(f"{ITEMS}{item_id}/", {"quantity": 2}, format="json"), 404, "not_found")
    assert_error(auth_client.delete(f"{ITEMS}{item_id}/"), 404, "not_found")


def test_cart_items_without_token_is_not_authenticated(api_client, product):
    assert_error(_add(api_client, product.id, 1), 401, "not_authenticated")


# what the schema states is what is enforced


@pytest.mark.parametrize("quantity", ["2", 2.0])
def test_cart_add_quantity_that_is_not_a_json_integer_is_validation_error(auth_client, product, quantity):
    assert_validation_error(_add(auth_client, product.id, quantity), "quantity")


def test_cart_add_product_id_as_string_is_validation_error(auth_client, product):
    assert_validation_error(_add(auth_client, str(product.id), 1), "product_id")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", CART), ("post", ITEMS), ("patch", f"{ITEMS}1/"), ("delete", f"{ITEMS}1/")],
)
def test_cart_operations_refuse_an_unknown_query_parameter(auth_client, product, method, path):
    body = {"post": {"product_id": product.id, "quantity": 1}, "patch": {"quantity": 1}}.get(method)
    response = getattr(auth_client, method)(f"{path}?debug=1", body, format="json")
    error = assert_validation_error(response, "debug")
    assert error["detail"]["debug"] == ["Unknown query parameter."]
