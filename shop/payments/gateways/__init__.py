"""Payment gateways behind one interface (:mod:`.base`); :func:`gateway_get` builds the configured one.

The class is chosen by the dotted path in ``SHOP_PAYMENT_GATEWAY`` (as Django's ``EMAIL_BACKEND`` is), default
:class:`shop.payments.gateways.http.HttpPaymentGateway` behind the ``payment_gateway`` circuit breaker. With no
``PAYMENT_GATEWAY_URL`` there is no gateway: payments stay pending and orders stay ``pending_payment`` until
one is configured and the pending payments are collected (``manage.py retry_payments``).
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.utils.module_loading import import_string

from shop.payments.gateways.base import PaymentGateway

_gateways: dict[tuple[str, str, tuple[float, float]], PaymentGateway] = {}
_lock = threading.Lock()


def gateway_get() -> PaymentGateway | None:
    """The configured gateway (one per process and configuration), or None when payments are not collected online."""
    url = settings.SHOP_PAYMENT_GATEWAY_URL
    if not url:
        return None
    connect, read = settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS
    key = (settings.SHOP_PAYMENT_GATEWAY, url, (connect, read))
    with _lock:
        gateway = _gateways.get(key)
        if gateway is None:
            gateway_class = import_string(settings.SHOP_PAYMENT_GATEWAY)
            gateway = gateway_class(base_url=url, connect_timeout=connect, read_timeout=read)
            _gateways[key] = gateway
    return gateway


def gateway_reset() -> None:
    """Forget the built gateways (tests: a new URL, timeouts or breaker registry)."""
    with _lock:
        _gateways.clear()
