"""Payment collection: charge an order's pending payment after its checkout committed, apply the outcome,
retry what the gateway could not answer, expire what stayed unpaid too long, reconcile late charges.

Everything here runs outside any transaction while it talks to the gateway: the gateway may be slow or down,
and no lock waits on it. Succeeded -> ``paid``; declined -> ``payment_failed`` and the stock is returned (the
order cannot complete, so its units go back on sale); gateway unavailable or not configured -> the order
stays ``pending_payment`` and :func:`payments_retry` (``manage.py retry_payments``, the admin actions)
collects it later with the same idempotency key, or cancels it, restocking, once it has been unpaid for
``PAYMENT_UNPAID_CANCEL_AFTER``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from shop.orders.models import Order, OrderStatus
from shop.orders.services import order_cancel_locked, order_restock
from shop.payments.exceptions import GatewayUnavailableError
from shop.payments.gateways import gateway_get
from shop.payments.gateways.base import ChargeOutcome, ChargeResult
from shop.payments.models import Payment, PaymentStatus
from shop.payments.services import payment_charge, payment_lookup

logger = logging.getLogger(__name__)


def _primary() -> str:
    """Reads that decide a charge or a cancellation go to the primary: a lagging replica would show stale payments."""
    return router.db_for_write(Payment)


def _pending_payment(order_id: int) -> Payment | None:
    pending = Payment.objects.using(_primary()).filter(order_id=order_id, status=PaymentStatus.PENDING)
    return pending.order_by("id").first()


def _order_status(order_id: int) -> str:
    return Order.objects.using(_primary()).values_list("status", flat=True).get(pk=order_id)


@transaction.atomic
def payment_apply(*, order_id: int, payment_id: int, result: ChargeResult) -> Order:
    """Record a charge's outcome: payment succeeded/declined, order paid/payment_failed (declined: stock back).

    Applying the same outcome twice changes nothing. A charge that succeeded for an order cancelled meanwhile
    is logged as an error for an operator to refund (the gateway API has no refunds).
    """
    order = Order.objects.select_for_update().get(pk=order_id)
    payment = Payment.objects.select_for_update().get(pk=payment_id)
    succeeded = result.outcome == ChargeOutcome.SUCCEEDED
    if payment.status != PaymentStatus.PENDING:
        if succeeded and payment.status == PaymentStatus.CANCELLED and not payment.gateway_reference:
            payment.gateway_reference = result.reference
            payment.last_error = "charged after the order was cancelled: refund it at the gateway"
            payment.save(update_fields=["gateway_reference", "last_error", "updated_at"])
            logger.error(
                "payment %s (order %s) was charged after the order was cancelled; refund charge %s",
                payment.pk,
                order.pk,
                result.reference,
                extra={"event": "payment_charged_after_cancel", "order": order.pk, "charge": result.reference},
            )
        return order
    payment.status = PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.DECLINED
    payment.gateway_reference = result.reference
    payment.last_error = "" if succeeded else (result.message or "declined")[:500]
    payment.save(update_fields=["status", "gateway_reference", "last_error", "updated_at"])
    if order.status == OrderStatus.PENDING_PAYMENT:
        if not succeeded:
            order_restock(order=order)
        order.status = OrderStatus.PAID if succeeded else OrderStatus.PAYMENT_FAILED
        order.save(update_fields=["status", "updated_at"])
    return order


def payment_collect(*, order_id: int) -> str:
    """Charge the order's pending payment now (outside any transaction); returns the order's status after it.

    Gateway unavailable or not configured: the order stays ``pending_payment`` (retried later, same key).
    """
    payment = _pending_payment(order_id)
    if payment is None:
        return _order_status(order_id)
    attempt = payment_charge(payment=payment)
    if attempt.result is None:
        return _order_status(order_id)
    return payment_apply(order_id=order_id, payment_id=payment.pk, result=attempt.result).status


def payment_expire_unpaid(*, order_id: int) -> str:
    """An order unpaid for too long: paid after all if the gateway did charge it, else cancelled (stock back).

    The gateway is asked first (the charge may have gone through while we could not record it); when it cannot
    tell, the order is kept for the next run. Returns the order's status after it.
    """
    payment = _pending_payment(order_id)
    if payment is not None:
        try:
            charge = payment_lookup(payment=payment)
        except GatewayUnavailableError as exc:
            logger.info("order %s not expired: the gateway cannot tell whether it was charged (%s)", order_id, exc)
            return OrderStatus.PENDING_PAYMENT
        if charge is not None:
            return payment_apply(order_id=order_id, payment_id=payment.pk, result=charge).status
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status == OrderStatus.PENDING_PAYMENT:
            order_cancel_locked(order=order)
            logger.info("order %s cancelled: unpaid too long", order_id, extra={"event": "order_expired"})
        return order.status


@dataclass
class PaymentRetryReport:
    paid: list[int] = field(default_factory=list)
    payment_failed: list[int] = field(default_factory=list)
    still_pending: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    refund_needed: list[int] = field(default_factory=list)  # cancelled orders the gateway charged all the same

    def add(self, order_id: int, status: str) -> None:
        {
            OrderStatus.PAID: self.paid,
            OrderStatus.PAYMENT_FAILED: self.payment_failed,
            OrderStatus.CANCELLED: self.cancelled,
        }.get(status, self.still_pending).append(order_id)


def payments_retry(
    *,
    order_ids: Iterable[int] | None = None,
    cancel_after: timedelta | None = None,
    now: datetime | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> PaymentRetryReport:
    """Collect every order pending payment (oldest first); cancel those unpaid longer than ``cancel_after``.

    Safe to run at any time and more than once, also concurrently: each payment keeps its idempotency key,
    so the gateway never charges one twice. An open gateway breaker lets the first attempt through as its
    trial (an operator asked to retry now); while it stays open, the other attempts fail at once.
    """
    gateway = gateway_get()
    if gateway is not None:
        gateway.retry_now()
    cancel_after = settings.SHOP_PAYMENT_UNPAID_CANCEL_AFTER if cancel_after is None else cancel_after
    expired_before = (now or timezone.now()) - cancel_after
    orders = Order.objects.using(_primary()).filter(status=OrderStatus.PENDING_PAYMENT).order_by("created_at", "id")
    if order_ids is not None:
        orders = orders.filter(id__in=list(order_ids))
    report = PaymentRetryReport()
    for order_id, created_at in list(orders.values_list("id", "created_at")):
        if created_at <= expired_before:
            status = payment_expire_unpaid(order_id=order_id)
        else:
            status = payment_collect(order_id=order_id)
        report.add(order_id, status)
        if progress is not None:
            progress(order_id, status)
    report.refund_needed = payments_reconcile_cancelled()
    return report


def payments_reconcile_cancelled() -> list[int]:
    """Orders cancelled while a charge attempt's outcome was unknown (a customer cancelled during an outage):
    ask the gateway once whether it charged them after all. Returns the orders it did charge (refund them;
    each is logged as an error). Kept for the next run while the gateway cannot tell.
    """
    unknown = Payment.objects.using(_primary()).filter(
        status=PaymentStatus.CANCELLED, attempts__gt=0, gateway_reference="", reconciled_at__isnull=True
    )
    charged = []
    for payment in list(unknown.order_by("id")):
        try:
            charge = payment_lookup(payment=payment)
        except GatewayUnavailableError:
            continue
        if charge is not None and charge.outcome == ChargeOutcome.SUCCEEDED:
            payment_apply(order_id=payment.order_id, payment_id=payment.pk, result=charge)  # logs the refund
            charged.append(payment.order_id)
        Payment.objects.filter(pk=payment.pk).update(reconciled_at=timezone.now())
    return charged
