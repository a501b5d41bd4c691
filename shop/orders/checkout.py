"""Checkout: place the order in one transaction, then -- after the commit, outside any transaction -- collect
its payment, and answer with the order as it stands then: ``paid``, ``payment_failed`` (declined; stock
returned) or ``pending_payment`` (gateway down, hanging or not configured: collected later, never charged
twice).

With an ``Idempotency-Key`` the whole of it runs once per (user, key): a retry gets the first response, and a
concurrent retry waits for the first to finish (see :mod:`resilience.idempotency.services`). The API hands in
how the body is validated and how an order is presented, so the stored replay is the response itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError

from resilience.idempotency.services import IdempotentResponse, idempotent_call
from shop.orders.models import Order
from shop.orders.selectors import order_get
from shop.orders.services import order_place
from shop.payments.collection import payment_collect

logger = logging.getLogger(__name__)

IDEMPOTENCY_SCOPE = "orders.create"
CREATED = 201


def order_checkout(
    *,
    user: AbstractBaseUser,
    request_body: Any,
    idempotency_key: str | None,
    validate: Callable[[Any], None],
    present: Callable[[Order], dict[str, Any]],
) -> IdempotentResponse:
    """Check out the user's cart; ``validate(body)`` raises on a bad body, ``present(order)`` is the response body.

    The key is checked before the body: a used key with another body is a 422 even if that body is invalid.
    """

    def place() -> tuple[int, dict[str, Any]]:
        validate(request_body)
        return CREATED, present(order_place(user=user))

    def collect(status: int, placed: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return status, _collect_payment(user=user, placed=placed, present=present)

    if idempotency_key is None:
        status, body = collect(*place())
        return IdempotentResponse(status=status, body=body, replayed=False)
    return idempotent_call(
        user=user,
        scope=IDEMPOTENCY_SCOPE,
        key=idempotency_key,
        request_body=request_body,
        handler=place,
        finish=collect,
        finish_wait=sum(settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS) + 5,
    )


def _collect_payment(
    *, user: AbstractBaseUser, placed: dict[str, Any], present: Callable[[Order], dict[str, Any]]
) -> dict[str, Any]:
    """After the order committed: charge it, then the order as it stands (``placed`` if the database fails now)."""
    try:
        payment_collect(order_id=placed["id"])
        return present(order_get(user=user, order_id=placed["id"]))
    except DatabaseError as exc:
        # The order is committed and its payment stays collectable (same key): answer with the order as placed.
        logger.warning(
            "order %s placed; recording its payment failed: %s",
            placed["id"],
            exc,
            extra={"event": "checkout_payment_record_failed", "order": placed["id"]},
        )
        return placed
