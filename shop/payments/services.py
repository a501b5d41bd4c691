"""Payment writes: a pending payment per order; charging it through the gateway, never inside a transaction.

Each payment has one idempotency key for its whole life, sent with every attempt: however often a charge
is retried (a timeout whose outcome was unknown, ``retry_payments``, two operators at once), the gateway
charges it at most once. With no gateway, or while it is unavailable, the payment stays ``pending``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.db.models import F
from django.utils import timezone

from shop.orders.models import Order
from shop.payments.exceptions import GatewayRequestRefusedError, GatewayUnavailableError
from shop.payments.gateways import gateway_get
from shop.payments.gateways.base import ChargeResult, PaymentGateway
from shop.payments.models import Payment, PaymentStatus

logger = logging.getLogger(__name__)


def payment_create(*, order: Order) -> Payment:
    return Payment.objects.create(
        order=order, amount=order.total, currency=order.currency, idempotency_key=f"order-{order.pk}-{uuid.uuid4().hex}"
    )


def payment_cancel_pending(*, order: Order) -> None:
    order.payments.filter(status=PaymentStatus.PENDING).update(status=PaymentStatus.CANCELLED)


@dataclass(frozen=True)
class ChargeAttempt:
    """What one attempt learned: a result, or None when the outcome is unknown (retry later, same key)."""

    result: ChargeResult | None
    error: str = ""
    skipped: bool = False  # the breaker was open: the gateway was not called


def payment_charge(*, payment: Payment, gateway: PaymentGateway | None = None) -> ChargeAttempt:
    """Ask the gateway to charge a pending payment and note the attempt; the outcome is applied by the caller.

    Never call it inside a transaction: the gateway may take up to its timeout, and no lock should wait on it.
    """
    gateway = gateway or gateway_get()
    if gateway is None:
        return ChargeAttempt(result=None, error="no payment gateway configured", skipped=True)
    try:
        result = gateway.charge(
            idempotency_key=payment.idempotency_key,
            amount=payment.amount,
            currency=payment.currency,
            reference=f"order-{payment.order_id}",
        )
    except GatewayUnavailableError as exc:
        _note_attempt(payment, error=str(exc), counted=not exc.skipped)
        return ChargeAttempt(result=None, error=str(exc), skipped=exc.skipped)
    except GatewayRequestRefusedError as exc:
        logger.error(
            "payment gateway refused the charge of payment %s: %s",
            payment.pk,
            exc,
            extra={"event": "payment_refused", "payment": payment.pk},
        )
        _note_attempt(payment, error=str(exc), counted=True)
        return ChargeAttempt(result=None, error=str(exc))
    _note_attempt(payment, error="", counted=True)
    return ChargeAttempt(result=result)


def payment_lookup(*, payment: Payment, gateway: PaymentGateway | None = None) -> ChargeResult | None:
    """The gateway's charge for this payment's key, None when it made none; GatewayUnavailableError when unknown."""
    gateway = gateway or gateway_get()
    if gateway is None:
        return None  # no gateway, no charge
    return gateway.lookup(idempotency_key=payment.idempotency_key)


def _note_attempt(payment: Payment, *, error: str, counted: bool) -> None:
    """Bookkeeping only (one UPDATE, autocommit): an attempt skipped by the open breaker is not counted."""
    if payment.pk is None:  # a dry run (test_guard_rails): nothing to record
        return
    updates: dict = {"last_error": error[:500], "updated_at": timezone.now()}
    if counted:
        updates["attempts"] = F("attempts") + 1
    Payment.objects.filter(pk=payment.pk).update(**updates)
