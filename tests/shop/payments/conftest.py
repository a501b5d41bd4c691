"""A real fake gateway (HTTP on a free loopback port, in this process) wired into the settings."""

from __future__ import annotations

import pytest

from devstack.fake_gateway import FakeGateway
from resilience.breakers.registry import reset_breakers
from shop.payments.gateways import gateway_reset

CONNECT_TIMEOUT, READ_TIMEOUT = 1.0, 0.5
BREAKER_FAILURES = 3


@pytest.fixture
def gateway(settings):
    """The fake gateway, configured as PAYMENT_GATEWAY_URL with short timeouts and a 3-failure breaker."""
    with FakeGateway(hang_seconds=10) as fake:
        settings.SHOP_PAYMENT_GATEWAY_URL = fake.url
        settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS = (CONNECT_TIMEOUT, READ_TIMEOUT)
        settings.BULWARK_BREAKERS = {"payment_gateway": {"failure_threshold": BREAKER_FAILURES, "reset_timeout": 30}}
        reset_breakers()
        gateway_reset()
        yield fake
        reset_breakers()
        gateway_reset()
