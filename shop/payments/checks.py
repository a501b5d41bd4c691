"""System check of the payment gateway setting (registered in ShopConfig.ready); IDs as in resilience/checks.py."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from shop.payments.gateways.base import PaymentGateway


def check_payment_gateway(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    path = settings.SHOP_PAYMENT_GATEWAY
    try:
        gateway_class = import_string(path)
    except ImportError as exc:
        problem = f"cannot be imported ({exc})"
    else:
        if isinstance(gateway_class, type) and issubclass(gateway_class, PaymentGateway):
            return []
        problem = "is not a PaymentGateway subclass"
    return [
        checks.Error(
            f"SHOP_PAYMENT_GATEWAY {path!r} {problem}: every checkout would fail to build its gateway.",
            hint="Point it at a subclass of shop.payments.gateways.base.PaymentGateway, "
            "e.g. 'shop.payments.gateways.http.HttpPaymentGateway'.",
            id="bulwark.E008",
        )
    ]


def register() -> None:
    checks.register(check_payment_gateway, "bulwark")
