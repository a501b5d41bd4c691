from __future__ import annotations

from decimal import Decimal

import pytest

from core.exceptions import FieldValidationError, NotFoundError
from shop.cart.models import MAX_LINE_QUANTITY, CartItem
from shop.cart.selectors import cart_view
from shop.cart.services import cart_add_item, cart_remove_item, cart_update_item
from shop.catalog.exceptions import OutOfStockError, Shortage
from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_cart_add_item_creates_line(user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=2)
    assert item.quantity == 2
    assert list(CartItem.objects.filter(cart__user=user)) == [item]


def test_cart_add_item_same_product_merges_quantity(user, product):
    first = cart_add_item(user=user, product_id=product.id, quantity=2)
    second = cart_add_item(user=user, product_id=product.id, quantity=3)
    assert second.id == first.id
    assert CartItem.objects.get(cart__user=user).quantity == 5


def test_cart_add_item_more_than_stock_raises_out_of_stock(user):
    product = ProductFactory(stock=3, sku="LOW-1")
    with pytest.raises(OutOfStockError) as excinfo:
        cart_add_item(user=user, product_id=product.id, quantity=4)
    assert excinfo.value.shortages == [Shortage(product.id, "LOW-1", requested=4, available=3)]
    assert not CartItem.objects.filter(cart__user=user).exists()


def test_cart_add_item_merge_beyond_stock_raises_and_keeps_line(user):
    product = ProductFactory(stock=5)
    cart_add_item(user=user, product_id=product.id, quantity=3)
    with pytest.raises(OutOfStockError) as excinfo:
        cart_add_item(user=user, product_id=product.id, quantity=3)
    assert excinfo.value.shortages[0].requested == 6
    assert CartItem.objects.get(cart__user=user).quantity == 3


def test_cart_add_item_beyond_line_limit_is_field_validation_error(user):
    product = ProductFactory(stock=MAX_LINE_QUANTITY + 10)
    cart_add_item(user=user, product_id=product.id, quantity=MAX_LINE_QUANTITY)
    with pytest.raises(FieldValidationError) as excinfo:
        cart_add_item(user=user, product_id=product.id, quantity=1)
    assert "quantity" in excinfo.value.detail


def test_cart_add_item_inactive_product_is_field_validation_error(user):
    product = ProductFactory(is_active=False)
    with pytest.raises(FieldValidationError) as excinfo:
        cart_add_item(user=user, product_id=product.id, quantity=1)
    assert "product_id" in excinfo.value.detail


def test_cart_add_item_unknown_product_is_field_validation_error(user):
    with pytest.raises(FieldValidationError) as excinfo:
        cart_add_item(user=user, product_id=987654321, quantity=1)
    assert "product_id" in excinfo.value.detail


def test_cart_update_item_sets_quantity(user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    cart_update_item(user=user, item_id=item.id, quantity=4)
    item.refresh_from_db()
    assert item.quantity == 4


def test_cart_update_item_beyond_stock_raises_out_of_stock(user):
    product = ProductFactory(stock=2)
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    with pytest.raises(OutOfStockError):
        cart_update_item(user=user, item_id=item.id, quantity=3)
    item.refresh_from_db()
    assert item.quantity == 1


def test_cart_update_item_of_other_user_raises_not_found(user, product):
    item = cart_add_item(user=UserFactory(), product_id=product.id, quantity=1)
    with pytest.raises(NotFoundError):
        cart_update_item(user=user, item_id=item.id, quantity=2)
    item.refresh_from_db()
    assert item.quantity == 1


def test_cart_remove_item_deletes_line(user, product):
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    cart_remove_item(user=user, item_id=item.id)
    assert not CartItem.objects.filter(id=item.id).exists()


def test_cart_remove_item_of_other_user_raises_not_found(user, product):
    item = cart_add_item(user=UserFactory(), product_id=product.id, quantity=1)
    with pytest.raises(NotFoundError):
        cart_remove_item(user=user, item_id=item.id)
    assert CartItem.objects.filter(id=item.id).exists()


def test_cart_view_totals_lines_in_added_order(user):
    mug = ProductFactory(price=Decimal("4.50"))
    lamp = ProductFactory(price=Decimal("19.99"))
    cart_add_item(user=user, product_id=lamp.id, quantity=1)
    cart_add_item(user=user, product_id=mug.id, quantity=3)
    view = cart_view(user=user)
    assert [item.product_id for item in view.items] == [lamp.id, mug.id]
    assert [item.line_total for item in view.items] == [Decimal("19.99"), Decimal("13.50")]
    assert view.total == Decimal("33.49")
    assert view.currency == "USD"


def test_cart_view_without_cart_is_empty(user):
    view = cart_view(user=user)
    assert view.items == []
    assert view.total == Decimal("0.00")
