"""Payment writes: a pending payment per order, collected through the gateway when one is configured."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction

from shop.orders.models import Order, OrderStatus
from shop.payments.gateways import ChargeOutcome, GatewayUnavailableError, gateway_get
from shop.payments.models import Payment, PaymentStatus

logger = logging.getLogger(__name__)


def payment_create(*, order: Order) -> Payment:
    return Payment.objects.create(
        order=order, amount=order.total, currency=order.currency, idempotency_key=f"order-{order.pk}-{uuid.uuid4().hex}"
    )


def payment_cancel_pending(*, order: Order) -> None:
    order.payments.filter(status=PaymentStatus.PENDING).update(status=PaymentStatus.CANCELLED)


def payment_collect(*, payment: Payment) -> Payment:
    """Try to charge a pending payment. Without a gateway, or when it is unavailable, it stays pending."""
    gateway = gateway_get()
    if gateway is None or payment.status != PaymentStatus.PENDING:
        return payment
    try:
        result = gateway.charge(
            idempotency_key=payment.idempotency_key,
            amount=payment.amount,
            currency=payment.currency,
            reference=f"order-{payment.order_id}",
        )
    except GatewayUnavailableError as exc:
        logger.warning("payment gateway unavailable; payment %s stays pending: %s", payment.pk, exc)
        Payment.objects.filter(pk=payment.pk).update(attempts=payment.attempts + 1, last_error=str(exc)[:500])
        return payment
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        payment.attempts += 1
        payment.gateway_reference = result.reference
        succeeded = result.outcome == ChargeOutcome.SUCCEEDED
        payment.status = PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.DECLINED
        payment.last_error = "" if succeeded else result.message[:500]
        payment.save()
        Order.objects.filter(pk=payment.order_id, status=OrderStatus.PENDING_PAYMENT).update(
            status=OrderStatus.PAID if succeeded else OrderStatus.PAYMENT_FAILED
        )
    return payment
