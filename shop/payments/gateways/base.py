"""The gateway contract. A concrete gateway (an HTTP client guarded by a circuit breaker) plugs in here.

With no ``PAYMENT_GATEWAY_URL`` there is no gateway: payments stay pending and orders stay
``pending_payment`` until one is configured and the pending payments are collected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class ChargeOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"


@dataclass(frozen=True)
class ChargeResult:
    outcome: ChargeOutcome
    reference: str
    message: str = ""


class GatewayUnavailableError(Exception):
    """The gateway could not be reached or did not answer in time: the charge may be retried later."""


class PaymentGateway(ABC):
    @abstractmethod
    def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, reference: str) -> ChargeResult:
        """Charge once per idempotency key; raise GatewayUnavailableError when the outcome is unknown."""


def gateway_get() -> PaymentGateway | None:
    """The configured gateway, or None when payments are not collected online yet."""
    return None
