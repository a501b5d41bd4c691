"""retry_payments (service, command, admin actions): pays pending orders once the gateway is back, never
charging twice, and cancels (restocking) orders unpaid past PAYMENT_UNPAID_CANCEL_AFTER."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from resilience.breakers.breaker import State
from resilience.breakers.registry import breaker_get
from shop.cart.services import cart_add_item
from shop.catalog.models import Product
from shop.orders.models import Order, OrderStatus
from shop.orders.services import order_cancel, order_place
from shop.payments.collection import payment_collect, payments_retry
from shop.payments.gateways import gateway_reset
from shop.payments.models import Payment, PaymentStatus
from tests.factories import ProductFactory, UserFactory
from tests.shop.payments.conftest import BREAKER_FAILURES

pytestmark = pytest.mark.django_db


def _place(quantity: int = 1) -> tuple[Order, Product]:
    user = UserFactory()
    product = ProductFactory(price=Decimal("3.00"), stock=10)
    cart_add_item(user=user, product_id=product.id, quantity=quantity)
    return order_place(user=user), product


def _status(order: Order) -> str:
    order.refresh_from_db()
    return order.status


def _age(order: Order, hours: float) -> None:
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(hours=hours))


def test_pending_orders_are_paid_once_the_gateway_is_back_and_never_twice(gateway):
    gateway.set_mode("fail")
    orders = [_place()[0] for _ in range(4)]
    for order in orders:
        assert payment_collect(order_id=order.pk) == OrderStatus.PENDING_PAYMENT
    assert breaker_get("payment_gateway").state is State.OPEN
    gateway.set_mode("succeed")
    breaker_get("payment_gateway")._opened_at -= 30  # the reset timeout has passed: the next call is the trial

    report = payments_retry()

    assert sorted(report.paid) == sorted(o.pk for o in orders)
    assert {_status(o) for o in orders} == {OrderStatus.PAID}
    assert gateway.charge_count() == 4
    again = payments_retry()
    assert again.paid == again.still_pending == []
    assert gateway.charge_count() == 4
    references = sorted(charge["reference"] for charge in gateway.charges())
    assert references == sorted(f"order-{o.pk}" for o in orders)  # one charge per order


def test_a_charge_that_went_through_unrecorded_is_not_charged_again(gateway):
    """The gateway hung, the client gave up, then the gateway processed the charge anyway: the retry sends the
    same key, the gateway answers with that charge, and the order is paid with one charge."""
    gateway.set_mode("hang")
    order, _ = _place()
    assert payment_collect(order_id=order.pk) == OrderStatus.PENDING_PAYMENT
    gateway.set_mode("succeed")  # releases the hung request, which now charges
    payment = Payment.objects.get(order=order)
    for _ in range(50):
        if gateway.charge_count():
            break
        time.sleep(0.05)
    assert gateway.charge_count() == 1

    report = payments_retry()

    assert report.paid == [order.pk]
    assert gateway.charge_count() == 1
    assert gateway.posts()[payment.idempotency_key] == 2  # asked twice, charged once
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED and payment.attempts == 2


def test_declined_on_retry_fails_the_order_and_returns_stock(gateway):
    gateway.set_mode("fail")
    order, product = _place(quantity=3)
    payment_collect(order_id=order.pk)
    gateway.set_mode("decline")
    report = payments_retry()
    assert report.payment_failed == [order.pk]
    product.refresh_from_db()
    assert product.stock == 10


def test_while_the_breaker_is_open_retry_skips_without_counting_attempts(gateway):
    gateway.set_mode("fail")
    orders = [_place()[0] for _ in range(BREAKER_FAILURES + 2)]
    report = payments_retry()
    assert sorted(report.still_pending) == sorted(o.pk for o in orders)
    attempts = sorted(Payment.objects.values_list("attempts", flat=True))
    assert attempts == [0, 0] + [1] * BREAKER_FAILURES


def test_unpaid_too_long_is_cancelled_and_restocked(gateway, settings):
    settings.SHOP_PAYMENT_UNPAID_CANCEL_AFTER = timedelta(hours=24)
    old, old_product = _place(quantity=4)
    recent, _ = _place()
    gateway.set_mode("fail")
    payment_collect(order_id=old.pk)
    payment_collect(order_id=recent.pk)
    gateway.set_mode("succeed")
    breaker_get("payment_gateway")._opened_at -= 30
    _age(old, 25)

    report = payments_retry()

    assert report.cancelled == [old.pk] and report.paid == [recent.pk]
    old_product.refresh_from_db()
    assert old_product.stock == 10
    assert Payment.objects.get(order=old).status == PaymentStatus.CANCELLED
    assert gateway.posts().get(Payment.objects.get(order=old).idempotency_key) is None  # never charged


def test_unpaid_too_long_but_charged_at_the_gateway_is_paid_not_cancelled(gateway):
    order, _ = _place()
    payment = Payment.objects.get(order=order)
    gateway.charge(payment.idempotency_key, {"amount": "3.00", "currency": "USD", "reference": f"order-{order.pk}"})
    _age(order, 48)
    report = payments_retry()
    assert report.paid == [order.pk]
    assert gateway.charge_count() == 1


def test_unpaid_too_long_is_kept_while_the_gateway_cannot_tell(gateway):
    order, _ = _place()
    _age(order, 48)
    gateway.set_mode("fail")
    report = payments_retry()
    assert report.still_pending == [order.pk]
    assert _status(order) == OrderStatus.PENDING_PAYMENT


def test_without_a_gateway_only_unpaid_too_long_orders_are_cancelled(settings):
    settings.SHOP_PAYMENT_GATEWAY_URL = None
    gateway_reset()
    old, _ = _place()
    recent, _ = _place()
    _age(old, 25)
    report = payments_retry(cancel_after=timedelta(hours=24))
    assert report.cancelled == [old.pk] and report.still_pending == [recent.pk]


def test_command_reports_progress_and_summary(gateway, capsys):
    gateway.set_mode("fail")
    order, _ = _place()
    payment_collect(order_id=order.pk)
    gateway.set_mode("succeed")
    out = StringIO()
    call_command("retry_payments", stdout=out)
    assert "1 order(s) pending payment" in out.getvalue()
    assert "1 paid, 0 declined" in out.getvalue()
    assert "retrying payments" in capsys.readouterr().err  # the progress bar
    assert _status(order) == OrderStatus.PAID


def test_command_obeys_a_forced_open_breaker(gateway):
    from resilience.controls.services import control_set

    order, _ = _place()
    control_set(key="breaker.payment_gateway.force_open", enabled=True, actor=None, reason="incident")
    out = StringIO()
    call_command("retry_payments", stdout=out, stderr=StringIO())
    assert "1 still pending" in out.getvalue()
    assert gateway.calls() == 0 and _status(order) == OrderStatus.PENDING_PAYMENT


def test_admin_actions_collect_selected_orders_and_payments(gateway, client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    gateway.set_mode("fail")
    first, _ = _place()
    second, _ = _place()
    for order in (first, second):
        payment_collect(order_id=order.pk)
    gateway.set_mode("succeed")
    response = client.post(
        reverse("admin:shop_order_changelist"),
        {"action": "retry_order_payments", "_selected_action": [first.pk]},
        follow=True,
    )
    assert "1 paid" in response.content.decode()
    assert (_status(first), _status(second)) == (OrderStatus.PAID, OrderStatus.PENDING_PAYMENT)
    payment = Payment.objects.get(order=second)
    response = client.post(
        reverse("admin:shop_payment_changelist"),
        {"action": "retry_payments", "_selected_action": [payment.pk]},
        follow=True,
    )
    assert "1 paid" in response.content.decode()
    assert _status(second) == OrderStatus.PAID
    assert gateway.charge_count() == 2


def test_cancelled_during_an_outage_but_charged_late_is_reported_for_refund_once(gateway, caplog):
    """The gateway hung; the customer cancelled the pending order; the gateway then charged it anyway."""
    gateway.set_mode("hang")
    order, product = _place()
    assert payment_collect(order_id=order.pk) == OrderStatus.PENDING_PAYMENT
    order_cancel(user=order.user, order_id=order.pk)
    gateway.set_mode("succeed")  # the hung request goes through now
    for _ in range(50):
        if gateway.charge_count():
            break
        time.sleep(0.05)

    report = payments_retry()

    assert report.refund_needed == [order.pk]
    assert _status(order) == OrderStatus.CANCELLED
    payment = Payment.objects.get(order=order)
    assert payment.gateway_reference == gateway.charges()[0]["id"] and "refund" in payment.last_error
    assert any(getattr(r, "event", None) == "payment_charged_after_cancel" for r in caplog.records)
    assert payments_retry().refund_needed == []  # reported once
    product.refresh_from_db()
    assert product.stock == 10


def test_cancelled_during_an_outage_and_not_charged_is_checked_once(gateway):
    gateway.set_mode("fail")
    order, _ = _place()
    payment_collect(order_id=order.pk)
    order_cancel(user=order.user, order_id=order.pk)
    gateway.set_mode("succeed")
    assert payments_retry().refund_needed == []
    assert Payment.objects.get(order=order).reconciled_at is not None
    calls = gateway.calls()
    payments_retry()
    assert gateway.calls() == calls
