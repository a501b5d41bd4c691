from __future__ import annotations

from decimal import Decimal

import pytest

from core.exceptions import NotFoundError
from shop.cart.models import CartItem
from shop.cart.services import cart_add_item
from shop.catalog.exceptions import OutOfStockError, Shortage
from shop.catalog.models import Product
from shop.orders.exceptions import CartEmptyError, OrderNotCancellableError
from shop.orders.models import Order, OrderStatus
from shop.orders.selectors import order_get, order_list
from shop.orders.services import order_cancel, order_place
from shop.payments.models import Payment, PaymentStatus
from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def _stock(product: Product) -> int:
    product.refresh_from_db()
    return product.stock


def test_order_place_decrements_stock(user):
    mug, lamp = ProductFactory(stock=10), ProductFactory(stock=4)
    cart_add_item(user=user, product_id=mug.id, quantity=3)
    cart_add_item(user=user, product_id=lamp.id, quantity=4)
    order_place(user=user)
    assert _stock(mug) == 7
    assert _stock(lamp) == 0


def test_order_place_freezes_lines_at_current_price(user):
    product = ProductFactory(price=Decimal("9.99"), sku="MUG-1", name="Mug")
    cart_add_item(user=user, product_id=product.id, quantity=2)
    Product.objects.filter(id=product.id).update(price=Decimal("12.50"))  # price changed after adding to cart

    order = order_place(user=user)

    Product.objects.filter(id=product.id).update(price=Decimal("20.00"), name="Renamed", sku="MUG-2")
    order.refresh_from_db()
    [line] = order.items.all()
    assert (line.sku, line.name, line.unit_price, line.quantity) == ("MUG-1", "Mug", Decimal("12.50"), 2)
    assert line.line_total == Decimal("25.00")
    assert order.total == Decimal("25.00")
    assert order.currency == "USD"


def test_order_place_totals_several_lines(user):
    mug = ProductFactory(price=Decimal("4.50"))
    lamp = ProductFactory(price=Decimal("19.99"))
    cart_add_item(user=user, product_id=mug.id, quantity=3)
    cart_add_item(user=user, product_id=lamp.id, quantity=1)
    order = order_place(user=user)
    assert order.total == Decimal("33.49")
    assert sorted(line.product_id for line in order.items.all()) == sorted([mug.id, lamp.id])


def test_order_place_empties_cart(user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    order_place(user=user)
    assert not CartItem.objects.filter(cart__user=user).exists()


def test_order_place_creates_pending_order_and_pending_payment(user, product):
    cart_add_item(user=user, product_id=product.id, quantity=2)
    order = order_place(user=user)
    assert order.status == OrderStatus.PENDING_PAYMENT
    assert order.user == user
    [payment] = Payment.objects.filter(order=order)
    assert payment.status == PaymentStatus.PENDING
    assert payment.amount == order.total
    assert payment.currency == order.currency
    assert payment.idempotency_key


def test_order_place_out_of_stock_line_changes_nothing(user):
    plenty = ProductFactory(stock=10, sku="OK-1")
    short = ProductFactory(stock=5, sku="SHORT-1")
    cart_add_item(user=user, product_id=plenty.id, quantity=2)
    cart_add_item(user=user, product_id=short.id, quantity=5)
    Product.objects.filter(id=short.id).update(stock=1)  # someone else bought it meanwhile

    with pytest.raises(OutOfStockError) as excinfo:
        order_place(user=user)

    assert excinfo.value.shortages == [Shortage(short.id, "SHORT-1", requested=5, available=1)]
    assert not Order.objects.exists()
    assert not Payment.objects.exists()
    assert _stock(plenty) == 10
    assert _stock(short) == 1
    assert sorted(CartItem.objects.filter(cart__user=user).values_list("product_id", "quantity")) == sorted(
        [(plenty.id, 2), (short.id, 5)]
    )


def test_order_place_lists_every_short_line(user):
    first, second = ProductFactory(stock=5), ProductFactory(stock=5)
    cart_add_item(user=user, product_id=first.id, quantity=3)
    cart_add_item(user=user, product_id=second.id, quantity=4)
    Product.objects.filter(id__in=[first.id, second.id]).update(stock=2)
    with pytest.raises(OutOfStockError) as excinfo:
        order_place(user=user)
    assert {shortage.product_id for shortage in excinfo.value.shortages} == {first.id, second.id}


def test_order_place_deactivated_product_is_out_of_stock(user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    Product.objects.filter(id=product.id).update(is_active=False)
    with pytest.raises(OutOfStockError) as excinfo:
        order_place(user=user)
    assert excinfo.value.shortages[0].available == 0
    assert not Order.objects.exists()


def test_order_place_empty_cart_raises_cart_empty(user, product):
    with pytest.raises(CartEmptyError):
        order_place(user=user)  # no cart at all
    item = cart_add_item(user=user, product_id=product.id, quantity=1)
    item.delete()
    with pytest.raises(CartEmptyError):
        order_place(user=user)  # a cart with no lines
    assert not Order.objects.exists()


def test_order_place_leaves_other_users_cart_alone(user, other_user, product):
    cart_add_item(user=user, product_id=product.id, quantity=1)
    cart_add_item(user=other_user, product_id=product.id, quantity=2)
    order_place(user=user)
    assert CartItem.objects.get(cart__user=other_user).quantity == 2


def test_order_cancel_returns_stock_and_sets_cancelled(user):
    product = ProductFactory(stock=5)
    cart_add_item(user=user, product_id=product.id, quantity=3)
    order = order_place(user=user)
    assert _stock(product) == 2

    cancelled = order_cancel(user=user, order_id=order.id)

    assert cancelled.status == OrderStatus.CANCELLED
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert _stock(product) == 5
    assert Payment.objects.get(order=order).status == PaymentStatus.CANCELLED


def test_order_cancel_of_cancelled_order_raises_not_cancellable(user, product):
    cart_add_item(user=user, product_id=product.id, quantity=3)
    order = order_place(user=user)
    order_cancel(user=user, order_id=order.id)
    with pytest.raises(OrderNotCancellableError) as excinfo:
        order_cancel(user=user, order_id=order.id)
    assert excinfo.value.code == "order_not_cancellable"
    assert _stock(product) == 10  # stock returned once, not twice


@pytest.mark.parametrize("status", [OrderStatus.PAID, OrderStatus.PAYMENT_FAILED])
def test_order_cancel_of_settled_order_raises_not_cancellable(user, product, status):
    cart_add_item(user=user, product_id=product.id, quantity=3)
    order = order_place(user=user)
    Order.objects.filter(id=order.id).update(status=status)
    with pytest.raises(OrderNotCancellableError):
        order_cancel(user=user, order_id=order.id)
    assert _stock(product) == 7


def test_order_cancel_of_other_users_order_raises_not_found(user, other_user, product):
    cart_add_item(user=other_user, product_id=product.id, quantity=3)
    order = order_place(user=other_user)
    with pytest.raises(NotFoundError):
        order_cancel(user=user, order_id=order.id)
    order.refresh_from_db()
    assert order.status == OrderStatus.PENDING_PAYMENT
    assert _stock(product) == 7


def test_order_get_of_other_users_order_raises_not_found(user, other_user, product):
    cart_add_item(user=other_user, product_id=product.id, quantity=1)
    order = order_place(user=other_user)
    with pytest.raises(NotFoundError):
        order_get(user=user, order_id=order.id)
    assert order_get(user=other_user, order_id=order.id) == order


def test_order_list_only_own_orders_newest_first(user, product):
    stranger = UserFactory()
    orders = []
    for _ in range(3):
        cart_add_item(user=user, product_id=product.id, quantity=1)
        orders.append(order_place(user=user))
    cart_add_item(user=stranger, product_id=product.id, quantity=1)
    order_place(user=stranger)
    assert list(order_list(user=user)) == orders[::-1]
