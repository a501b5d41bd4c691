"""The payment gateway's timeouts, breaker and unpaid-order settings: defaults, parsing, refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilience.config import ConfigError, load_config
from resilience.config.spof import assess_config
from tests.resilience.config.test_loader import VALID


def test_defaults() -> None:
    gateway = load_config(VALID).payment_gateway
    assert gateway == {
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "breaker_failures": 3,
        "breaker_reset": 30.0,
        "unpaid_cancel_after": timedelta(hours=24),
    }


def test_values_are_read() -> None:
    gateway = load_config(
        {
            **VALID,
            "PAYMENT_GATEWAY_CONNECT_TIMEOUT": "1",
            "PAYMENT_GATEWAY_TIMEOUT": "3s",
            "PAYMENT_GATEWAY_BREAKER_FAILURES": "5",
            "PAYMENT_GATEWAY_BREAKER_RESET": "1m",
            "PAYMENT_UNPAID_CANCEL_AFTER": "2d",
        }
    ).payment_gateway
    assert (gateway["connect_timeout"], gateway["read_timeout"]) == (1.0, 3.0)
    assert (gateway["breaker_failures"], gateway["breaker_reset"]) == (5, 60.0)
    assert gateway["unpaid_cancel_after"] == timedelta(days=2)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PAYMENT_GATEWAY_TIMEOUT", "30s", "at most 20s"),
        ("PAYMENT_GATEWAY_TIMEOUT", "soon", "not a duration"),
        ("PAYMENT_GATEWAY_CONNECT_TIMEOUT", "0", "not a duration"),
        ("PAYMENT_GATEWAY_CONNECT_TIMEOUT", "1m", "at most 10s"),
        ("PAYMENT_GATEWAY_BREAKER_FAILURES", "0", "out of range"),
        ("PAYMENT_GATEWAY_BREAKER_RESET", "-1", "not a duration"),
        ("PAYMENT_UNPAID_CANCEL_AFTER", "5m", "at least 10m"),
    ],
)
def test_bad_values_are_named(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**VALID, name: value})
    [problem] = [p for p in caught.value.problems if name in p]
    assert fragment in problem


def test_spof_report_describes_the_gateway_breaker() -> None:
    config = load_config({**VALID, "PAYMENT_GATEWAY_URL": "https://pay.example.com", "PAYMENT_GATEWAY_TIMEOUT": "4s"})
    area = assess_config(config)["circuitBreakers"]
    text = " ".join(line.message for line in area.lines)
    assert "read 4s" in text and "opens after 3 failed calls" in text
    assert "pending_payment" in area.detail
