"""Payment gateways behind one interface; :func:`gateway_get` picks the configured one (or none)."""

from shop.payments.gateways.base import (
    ChargeOutcome,
    ChargeResult,
    GatewayRequestRefusedError,
    GatewayUnavailableError,
    PaymentGateway,
    gateway_get,
)

__all__ = [
    "ChargeOutcome",
    "ChargeResult",
    "GatewayRequestRefusedError",
    "GatewayUnavailableError",
    "PaymentGateway",
    "gateway_get",
]
