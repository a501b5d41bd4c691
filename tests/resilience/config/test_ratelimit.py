"""RATELIMIT_<SCOPE> and the Redis timeouts: parsed, defaulted, and a bad value listed at start-up."""

from __future__ import annotations

import pytest

from resilience.config import ConfigError, load_config
from resilience.config.ratelimit import RATE_VARIABLES, format_rate, parse_rate
from resilience.config.schema import SCHEMA_BY_NAME
from tests.resilience.config.test_loader import VALID


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/m", (10, 60)),
        ("300/M", (300, 60)),
        ("1000/h", (1000, 3600)),
        ("50/10m", (50, 600)),
        ("5/30s", (5, 30)),
        (" 2 / d ", (2, 86400)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_parse_rate(text: str, rate: tuple[int, int] | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["abc", "10", "10/", "10/x", "0/m", "-1/m", "10/8d", "1.5/m", "10/m/s", ""])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_format_rate_round_trips() -> None:
    for text in ("10/m", "1000/h", "50/10m", "5/30s", "2/d", "off"):
        assert format_rate(parse_rate(text)) == text


def test_every_scope_has_a_documented_variable_with_a_valid_default() -> None:
    for name in RATE_VARIABLES.values():
        var = SCHEMA_BY_NAME[name]
        assert var.kind == "rate" and var.area == "rateLimit" and var.default
        parse_rate(var.default)


def test_defaults_and_overrides() -> None:
    config = load_config({**VALID, "RATELIMIT_LOGIN": "5/10m", "RATELIMIT_API": "off"})
    assert config.ratelimit_rates["login"] == (5, 600)
    assert config.ratelimit_rates["api"] is None
    assert config.ratelimit_rates["checkout"] == parse_rate(SCHEMA_BY_NAME["RATELIMIT_CHECKOUT"].default)
    assert config.redis_connect_timeout_ms <= 250 and config.redis_socket_timeout_ms <= 250


def test_bad_rates_and_timeouts_are_listed_together() -> None:
    environ = {**VALID, "RATELIMIT_LOGIN": "abc", "RATELIMIT_CHECKOUT": "10 per minute", "REDIS_SOCKET_TIMEOUT_MS": "5"}
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("RATELIMIT_LOGIN: 'abc' is not a rate")
    assert any(p.startswith("RATELIMIT_CHECKOUT:") for p in problems)
    assert any(p.startswith("REDIS_SOCKET_TIMEOUT_MS:") and "out of range" in p for p in problems)
