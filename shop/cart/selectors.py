"""Cart reads: the cart with its lines and totals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from shop.cart.models import CartItem


@dataclass(frozen=True)
class CartView:
    items: list[CartItem]
    total: Decimal
    currency: str


def cart_view(*, user: AbstractBaseUser) -> CartView:
    items = list(
        CartItem.objects.filter(cart__user=user)
        .select_related("product")  # the cart shows no category: a stuck category table must not hold it up
        .order_by("added_at", "id")
    )
    total = sum((item.line_total for item in items), Decimal("0.00"))
    return CartView(items=items, total=total.quantize(Decimal("0.01")), currency=settings.SHOP_CURRENCY)
