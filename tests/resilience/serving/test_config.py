"""The serving variables: limits kept below the thread count, budgets, body sizes, the pool."""

from __future__ import annotations

import pytest

from resilience.config import load_config
from resilience.config.serving import format_size, parse_size
from tests.resilience.config.test_loader import VALID, problems


def test_the_defaults_keep_a_thread_for_ops() -> None:
    serving = load_config(VALID).serving
    assert serving.threads == 8 and serving.pool is None
    assert serving.limits == {"catalog": 4, "auth": 3, "checkout": 3, "admin": 2, "ops": 4}
    assert all(limit < serving.threads for name, limit in serving.limits.items() if name != "ops")
    assert serving.budgets == {"catalog": 5.0, "auth": 10.0, "checkout": 15.0, "admin": 30.0, "ops": 3.0}
    assert serving.max_bodies["checkout"] == 64 * 1024 and serving.max_bodies["admin"] == 2 * 1024 * 1024


def test_a_limit_that_would_take_every_thread_is_refused_at_start_up() -> None:
    found = problems({**VALID, "WEB_THREADS": "4", "SERVING_LIMIT_CATALOG": "4", "SERVING_LIMIT_OPS": "5"})
    assert any(
        p.startswith("SERVING_LIMIT_CATALOG: 4 would let catalog requests take every one of a worker's 4 threads")
        and "at most 3" in p
        for p in found
    ), found
    assert any(p.startswith("SERVING_LIMIT_OPS: 5 is above WEB_THREADS=4") for p in found), found


def test_configured_values_are_taken() -> None:
    serving = load_config(
        {
            **VALID,
            "WEB_THREADS": "16",
            "SERVING_LIMIT_CATALOG": "12",
            "SERVING_BUDGET_CHECKOUT": "20s",
            "SERVING_MAX_BODY_AUTH": "8KiB",
            "SERVING_POOL": "checkout",
        }
    ).serving
    assert (serving.threads, serving.limits["catalog"], serving.budgets["checkout"]) == (16, 12, 20.0)
    assert (serving.max_bodies["auth"], serving.pool) == (8192, "checkout")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SERVING_MAX_BODY_AUTH", "12q", "is not a size"),
        ("SERVING_MAX_BODY_AUTH", "2g", "is not a size"),
        ("SERVING_BUDGET_ADMIN", "2h", "is too long"),
        ("SERVING_BUDGET_OPS", "soon", "is not a duration"),
        ("SERVING_POOL", "shipping", "is not a traffic class"),
        ("WEB_THREADS", "1", "out of range"),
        ("SERVING_LIMIT_AUTH", "0", "out of range"),
    ],
)
def test_a_bad_value_is_one_clear_problem(name: str, value: str, message: str) -> None:
    found = [p for p in problems({**VALID, name: value}) if p.startswith(f"{name}:")]
    assert len(found) == 1 and message in found[0], found


@pytest.mark.parametrize(("text", "size"), [("65536", 65536), ("64k", 65536), ("64KiB", 65536), ("2m", 2097152)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size
