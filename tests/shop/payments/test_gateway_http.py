"""The HTTP payment gateway client against the fake gateway (a real HTTP server on loopback)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from resilience.breakers.breaker import State
from resilience.breakers.registry import breaker_get
from shop.payments.exceptions import GatewayUnavailableError
from shop.payments.gateways import gateway_get, gateway_reset
from shop.payments.gateways.base import ChargeOutcome
from shop.payments.gateways.http import HttpPaymentGateway
from tests.shop.payments.conftest import BREAKER_FAILURES, READ_TIMEOUT


def _charge(gw, key: str = "key-1", amount: str = "12.50"):
    return gw.charge(idempotency_key=key, amount=Decimal(amount), currency="USD", reference="order-7")


def test_gateway_get_is_none_without_url_and_one_http_gateway_with_it(settings, gateway):
    assert isinstance(gateway_get(), HttpPaymentGateway)
    assert gateway_get() is gateway_get()
    settings.SHOP_PAYMENT_GATEWAY_URL = None
    gateway_reset()
    assert gateway_get() is None


def test_charge_succeeds_once_per_key(gateway):
    first = _charge(gateway_get())
    again = _charge(gateway_get())
    assert first.outcome is ChargeOutcome.SUCCEEDED
    assert again == first  # the same charge, answered 200 the second time
    assert gateway.charge_count() == 1
    assert gateway.posts() == {"key-1": 2}
    [charge] = gateway.charges()
    assert (charge["amount"], charge["currency"], charge["reference"]) == ("12.50", "USD", "order-7")


def test_decline_is_an_answer_that_never_opens_the_breaker(gateway):
    gateway.set_mode("decline")
    for n in range(BREAKER_FAILURES + 2):
        result = _charge(gateway_get(), key=f"declined-{n}")
        assert result.outcome is ChargeOutcome.DECLINED
        assert "declined" in result.message.lower()
    assert breaker_get("payment_gateway").state is State.CLOSED


def test_failing_gateway_opens_the_breaker_then_calls_skip_it(gateway):
    gateway.set_mode("fail")
    for _ in range(BREAKER_FAILURES):
        with pytest.raises(GatewayUnavailableError) as excinfo:
            _charge(gateway_get())
        assert not excinfo.value.skipped
    calls = gateway.calls()
    with pytest.raises(GatewayUnavailableError) as excinfo:
        _charge(gateway_get())
    assert excinfo.value.skipped
    assert gateway.calls() == calls
    assert gateway.charge_count() == 0


def test_hanging_gateway_costs_one_read_timeout(gateway):
    gateway.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(GatewayUnavailableError):
        _charge(gateway_get())
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 1.0


def test_lookup_finds_the_charge_of_a_key_or_none(gateway):
    assert gateway_get().lookup(idempotency_key="never-used") is None
    charged = _charge(gateway_get(), key="a/key with spaces")
    assert gateway_get().lookup(idempotency_key="a/key with spaces") == charged


def test_lookup_while_gateway_fails_is_unavailable(gateway):
    gateway.set_mode("fail")
    with pytest.raises(GatewayUnavailableError):
        gateway_get().lookup(idempotency_key="k")
