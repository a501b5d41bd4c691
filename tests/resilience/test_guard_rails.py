"""manage.py test_guard_rails: every guard rail exercised in isolation, a ✅/❌ report, exit 0 only when all work."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from devstack.fake_gateway import FakeGateway
from resilience.breakers.registry import breaker_get, reset_breakers
from resilience.controls.models import OperatorControl
from resilience.guard_rails import guard_rail_register, guard_rail_unregister
from shop.orders.models import Order
from shop.payments.gateways import gateway_reset

pytestmark = pytest.mark.django_db(databases="__all__")  # the serving guard rail runs a statement on every node


@pytest.fixture(autouse=True)
def _fresh():
    reset_breakers()
    gateway_reset()
    yield
    reset_breakers()
    gateway_reset()


def _run() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("test_guard_rails", stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def test_every_guard_rail_works_against_a_live_gateway_and_nothing_is_charged_or_changed(settings):
    with FakeGateway() as gateway:
        settings.SHOP_PAYMENT_GATEWAY_URL = gateway.url
        code, out = _run()
        assert gateway.charge_count() == 0  # a lookup only
    assert code == 0, out
    assert "❌" not in out and "Every guard rail works." in out
    for section in (
        "Circuit breaker: payment_gateway",
        "Guarded HTTP client",
        "Payments: gateway down",
        "Database: replica and primary fallback",
        "Fallback cache",
        "Serving: bulkheads and time budgets",
    ):
        assert section in out
    assert out.count("✅") >= 12 + 4 + 2  # serving: four classes shed, two nodes cut at a budget
    assert "default: a statement past a 0.3s budget cancelled in" in out
    assert f"gateway at {gateway.url} answers" in out
    assert breaker_get("payment_gateway").snapshot()["calls"] == {
        "success": 0,
        "failure": 0,
        "excluded": 0,
        "rejected": 0,
    }  # the live breaker was not used
    assert not Order.objects.exists() and not OperatorControl.objects.exists()


def test_gateway_down_is_a_warning_not_a_failure(settings):
    settings.SHOP_PAYMENT_GATEWAY_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    code, out = _run()
    assert code == 0, out
    assert "⚠️  gateway unavailable now" in out


def test_a_forced_breaker_is_reported(settings):
    from resilience.controls.services import control_set

    control_set(key="breaker.payment_gateway.force_open", enabled=True, actor=None, reason="drill")
    code, out = _run()
    assert code == 0
    assert "FORCED OPEN" in out


def test_a_broken_guard_rail_fails_the_run():
    def broken():
        yield ("ok", "this part works")
        raise RuntimeError("the fallback is missing")

    guard_rail_register("Broken on purpose", broken)
    try:
        code, out = _run()
    finally:
        guard_rail_unregister("Broken on purpose")
    assert code == 1
    assert "❌ the check itself failed: RuntimeError: the fallback is missing" in out
    assert "Some guard rails do not work" in out


def test_the_rate_limit_store_guard_rail_falls_back_to_memory_within_one_timeout():
    from resilience.cache.guard_rails import check_cache

    lines = list(check_cache())
    assert [level for level, _ in lines[:2]] == ["ok", "ok"], lines
    assert "fell back to memory" in lines[0][1] and "counting goes on in memory" in lines[1][1]
    assert lines[2][0] in ("ok", "warn")
