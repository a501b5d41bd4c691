"""Order reads: a user sees only their own orders."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from core.exceptions import NotFoundError
from shop.orders.models import Order


def order_list(*, user: AbstractBaseUser) -> QuerySet[Order]:
    return Order.objects.filter(user=user).prefetch_related("items", "payments").order_by("-created_at", "-id")


def order_get(*, user: AbstractBaseUser, order_id: int) -> Order:
    order = order_list(user=user).filter(id=order_id).first()
    if order is None:  # someone else's order is indistinguishable from a missing one
        raise NotFoundError("No order with this id.")
    return order
