"""The gateway contract every payment gateway implements (chosen by ``SHOP_PAYMENT_GATEWAY``)."""

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


class PaymentGateway(ABC):
    """Built by ``gateway_get`` as ``cls(base_url=..., connect_timeout=..., read_timeout=...)`` from the settings."""

    @abstractmethod
    def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, reference: str) -> ChargeResult:
        """Charge once per idempotency key; raise GatewayUnavailableError when the outcome is unknown."""

    @abstractmethod
    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        """The charge made with this key, or None when there is none; GatewayUnavailableError when unknown."""

    def retry_now(self) -> None:  # noqa: B027 - optional: a gateway without a breaker has nothing to do
        """An operator retries pending payments now: a gateway behind a breaker tries at once (a trial call)."""
