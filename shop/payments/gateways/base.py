"""The gateway contract, and :func:`gateway_get`, which builds the configured gateway (or none).

With no ``PAYMENT_GATEWAY_URL`` there is no gateway: payments stay pending and orders stay
``pending_payment`` until one is configured and the pending payments are collected
(``manage.py retry_payments``). With one, it is the HTTP gateway of :mod:`.http`, behind the
``payment_gateway`` circuit breaker.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from django.conf import settings


class ChargeOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"


@dataclass(frozen=True)
class ChargeResult:
    outcome: ChargeOutcome
    reference: str
    message: str = ""


class GatewayUnavailableError(Exception):
    """The gateway could not be reached, did not answer in time, or its breaker is open: retry later.

    ``skipped`` is true when the gateway was not called at all (open breaker): nothing can have been charged.
    """

    def __init__(self, message: str, *, skipped: bool = False) -> None:
        super().__init__(message)
        self.skipped = skipped


class GatewayRequestRefusedError(Exception):
    """The gateway answered but refused the request itself (a 4xx that is no decline): a bug to look at."""


class PaymentGateway(ABC):
    @abstractmethod
    def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, reference: str) -> ChargeResult:
        """Charge once per idempotency key; raise GatewayUnavailableError when the outcome is unknown."""

    @abstractmethod
    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        """The charge made with this key, or None when there is none; GatewayUnavailableError when unknown."""


_gateways: dict[tuple[str, tuple[float, float]], PaymentGateway] = {}
_lock = threading.Lock()


def gateway_get() -> PaymentGateway | None:
    """The configured gateway (one per process and configuration), or None when payments are not collected online."""
    url = settings.SHOP_PAYMENT_GATEWAY_URL
    if not url:
        return None
    key = (url, tuple(settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS))
    gateway = _gateways.get(key)
    if gateway is None:
        from shop.payments.gateways.http import HttpPaymentGateway  # imported only when a gateway is configured

        with _lock:
            gateway = _gateways.get(key)
            if gateway is None:
                connect, read = settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS
                gateway = HttpPaymentGateway(base_url=url, connect_timeout=connect, read_timeout=read)
                _gateways[key] = gateway
    return gateway


def gateway_reset() -> None:
    """Forget the built gateways (tests: a new URL, timeouts or breaker registry)."""
    with _lock:
        _gateways.clear()
