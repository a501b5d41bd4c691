"""The payment fallback's guard rail (registered in ShopConfig.ready): never charges, never writes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from resilience.breakers.breaker import CircuitBreaker, Forced
from resilience.breakers.registry import breaker_config
from resilience.guard_rails import guard_rail_register
from shop.orders.models import Order, OrderStatus
from shop.payments.exceptions import GatewayUnavailableError
from shop.payments.gateways.http import BREAKER, HttpPaymentGateway
from shop.payments.models import Payment
from shop.payments.services import payment_charge


def register() -> None:
    guard_rail_register("Payments: gateway down -> orders kept pending_payment", check_payments)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _scratch_gateway(url: str, forced: Forced = Forced.AUTOMATIC) -> HttpPaymentGateway:
    connect, read = settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS
    breaker = CircuitBreaker(f"{BREAKER}.guard_rail", breaker_config(BREAKER), forced_source=lambda: forced)
    return HttpPaymentGateway(base_url=url, connect_timeout=connect, read_timeout=read, breaker=breaker)


def check_payments() -> Iterator[tuple[str, str]]:
    with closing(socket.socket()) as nowhere:
        nowhere.bind(("127.0.0.1", 0))  # bound, not listening: nothing there
        url = f"http://127.0.0.1:{nowhere.getsockname()[1]}"
        unsaved = Payment(
            order_id=0, amount=Decimal("1.00"), currency="USD", idempotency_key=f"guard-rail-{uuid.uuid4().hex}"
        )
        attempt = payment_charge(payment=unsaved, gateway=_scratch_gateway(url, Forced.OPEN))
        yield (
            "ok" if attempt.result is None and attempt.skipped else "fail",
            "breaker open: checkout skips the gateway at once and keeps the order pending_payment",
        )
        attempt = payment_charge(payment=unsaved, gateway=_scratch_gateway(url))
        yield (
            "ok" if attempt.result is None and not attempt.skipped else "fail",
            "gateway down: the charge's outcome is unknown, so the order stays pending_payment for retry_payments",
        )

    connect, read = settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS
    if not settings.SHOP_PAYMENT_GATEWAY_URL:
        yield ("warn", "no PAYMENT_GATEWAY_URL: orders stay pending_payment until one is configured")
    else:
        yield ("info", f"gateway timeouts: connect {connect:g}s, read {read:g}s")
        try:
            # A lookup of a key nobody used: answered 404 by a working gateway, and it charges nothing.
            _scratch_gateway(settings.SHOP_PAYMENT_GATEWAY_URL).lookup(idempotency_key=f"guard-rail-{uuid.uuid4().hex}")
            yield ("ok", f"gateway at {settings.SHOP_PAYMENT_GATEWAY_URL} answers (a lookup; nothing charged)")
        except GatewayUnavailableError as exc:
            yield ("warn", f"gateway unavailable now ({exc}): checkouts keep orders pending_payment meanwhile")

    pending = Order.objects.filter(status=OrderStatus.PENDING_PAYMENT)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None:
        yield ("info", "no order pending payment")
    else:
        age = _age(timezone.now() - oldest)
        yield ("info", f"{pending.count()} order(s) pending payment, the oldest {age} old: run retry_payments")
