"""Order writes: placing an order and cancelling it.

Placing an order is one transaction: the cart row is locked (one checkout per user at a time), then
the products are locked in id order (concurrent checkouts of overlapping carts cannot
deadlock), stock is checked and decremented, the order and its pending payment are created
and the cart is emptied. Either all of it commits or none of it does.

Payment is collected after that commit, outside any transaction, by :mod:`shop.payments.collection`; the
whole checkout (idempotency, placing, collecting) is orchestrated by :mod:`shop.orders.checkout`.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F

from core.exceptions import NotFoundError
from shop.cart.models import Cart
from shop.cart.services import cart_clear
from shop.catalog.exceptions import OutOfStockError, Shortage
from shop.catalog.models import Product
from shop.orders.exceptions import CartEmptyError, OrderNotCancellableError
from shop.orders.models import Order, OrderItem, OrderStatus
from shop.payments.services import payment_cancel_pending, payment_create


def _lock_products(product_ids: set[int]) -> dict[int, Product]:
    locked = Product.objects.select_for_update().filter(id__in=product_ids).order_by("id")
    return {product.id: product for product in locked}


@transaction.atomic
def order_place(*, user: AbstractBaseUser) -> Order:
    """Turn the user's cart into an order pending payment; raises CartEmptyError or OutOfStockError."""
    cart = Cart.objects.select_for_update().filter(user=user).first()
    items = list(cart.items.order_by("id")) if cart else []
    if cart is None or not items:
        raise CartEmptyError()
    products = _lock_products({item.product_id for item in items})

    shortages = []
    for item in items:
        product = products[item.product_id]
        available = product.stock if product.is_active else 0
        if item.quantity > available:
            shortages.append(Shortage(product.id, product.sku, requested=item.quantity, available=available))
    if shortages:
        raise OutOfStockError(shortages)

    lines = [
        OrderItem(
            product=products[item.product_id],
            sku=products[item.product_id].sku,
            name=products[item.product_id].name,
            unit_price=products[item.product_id].price,
            quantity=item.quantity,
            line_total=products[item.product_id].price * item.quantity,
        )
        for item in items
    ]
    total = sum((line.line_total for line in lines), Decimal("0.00"))
    order = Order.objects.create(
        user=user, status=OrderStatus.PENDING_PAYMENT, total=total, currency=settings.SHOP_CURRENCY
    )
    for line in lines:
        line.order = order
    OrderItem.objects.bulk_create(lines)
    for item in items:
        Product.objects.filter(id=item.product_id).update(stock=F("stock") - item.quantity)
    cart_clear(cart=cart)
    payment_create(order=order)
    return order


@transaction.atomic
def order_cancel(*, user: AbstractBaseUser, order_id: int) -> Order:
    """Cancel an order pending payment and return its stock."""
    order = Order.objects.select_for_update().filter(user=user, id=order_id).first()
    if order is None:
        raise NotFoundError("No order with this id.")
    if order.status != OrderStatus.PENDING_PAYMENT:
        raise OrderNotCancellableError(order.status)
    order_cancel_locked(order=order)
    return order


def order_restock(*, order: Order) -> None:
    """Put a locked order's units back on sale (the caller holds the order's row lock)."""
    items = list(order.items.all())
    _lock_products({item.product_id for item in items})
    for item in items:
        Product.objects.filter(id=item.product_id).update(stock=F("stock") + item.quantity)


def order_cancel_locked(*, order: Order) -> None:
    """Cancel a locked order pending payment: stock back, pending payment cancelled."""
    order_restock(order=order)
    order.status = OrderStatus.CANCELLED
    order.save(update_fields=["status", "updated_at"])
    payment_cancel_pending(order=order)
