"""Each system check fires on the misconfiguration it names, with its ID and a hint; the real settings pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from resilience.checks import (
    AUTH_MIDDLEWARE,
    FAILOVER_ROUTER,
    RATELIMIT_THROTTLE,
    REQUEST_ID_MIDDLEWARE,
    ROUTING_MIDDLEWARE,
)

ROOT = Path(__file__).resolve().parents[2]


def _ids() -> list[str]:
    return sorted(message.id for message in checks.run_checks(tags=["bulwark"]) if not message.is_silenced())


def _hinted(check_id: str) -> checks.CheckMessage:
    (message,) = [m for m in checks.run_checks(tags=["bulwark"]) if m.id == check_id and not m.is_silenced()]
    assert message.hint and message.msg
    return message


def test_the_project_settings_pass_every_check():
    assert _ids() == []


def test_routing_middleware_missing(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != ROUTING_MIDDLEWARE]
    assert _ids() == ["bulwark.E001"]
    assert "read_only_mode" in _hinted("bulwark.E001").msg


def test_routing_middleware_after_authentication(settings):
    rest = [m for m in settings.MIDDLEWARE if m != ROUTING_MIDDLEWARE]
    at = rest.index(AUTH_MIDDLEWARE) + 1
    settings.MIDDLEWARE = [*rest[:at], ROUTING_MIDDLEWARE, *rest[at:]]
    assert _ids() == ["bulwark.E002"]
    _hinted("bulwark.E002")


def test_request_id_middleware_missing_is_a_warning(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != REQUEST_ID_MIDDLEWARE]
    assert _ids() == ["bulwark.W001"]
    assert _hinted("bulwark.W001").level == checks.WARNING


def test_failover_router_missing(settings):
    settings.DATABASE_ROUTERS = [r for r in settings.DATABASE_ROUTERS if r != FAILOVER_ROUTER]
    assert _ids() == ["bulwark.E003"]
    _hinted("bulwark.E003")


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # only the checks read it here
def test_a_database_alias_on_the_plain_engine(settings):
    databases = {alias: dict(db) for alias, db in settings.DATABASES.items()}
    databases["default"]["ENGINE"] = "django.db.backends.postgresql"
    settings.DATABASES = databases
    assert _ids() == ["bulwark.E004"]
    assert "default" in _hinted("bulwark.E004").msg


def test_rate_limit_cache_not_the_fallback_cache(settings):
    settings.CACHES = {**settings.CACHES, "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": ""}}
    assert _ids() == ["bulwark.E005"]
    assert "django_redis.cache.RedisCache" in _hinted("bulwark.E005").msg


def test_rate_limit_throttle_not_installed(settings):
    throttles = [t for t in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] if t != RATELIMIT_THROTTLE]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": throttles}
    assert _ids() == ["bulwark.E006"]
    _hinted("bulwark.E006")


def test_rate_limiting_turned_off_is_a_warning(settings):
    settings.RATELIMIT_ENABLE = False  # as in the test settings, which silence it by ID
    settings.SILENCED_SYSTEM_CHECKS = [c for c in settings.SILENCED_SYSTEM_CHECKS if c != "bulwark.W002"]
    assert _ids() == ["bulwark.W002"]
    assert _hinted("bulwark.W002").level == checks.WARNING


def test_envelope_exception_handler_not_set(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "EXCEPTION_HANDLER": "rest_framework.views.exception_handler"}
    assert _ids() == ["bulwark.E007"]
    assert "rest_framework.views.exception_handler" in _hinted("bulwark.E007").msg


@pytest.mark.parametrize("path", ["shop.payments.gateways.nowhere.Gateway", "shop.payments.models.Payment"])
def test_payment_gateway_class_that_cannot_serve(settings, path):
    settings.SHOP_PAYMENT_GATEWAY = path
    assert _ids() == ["bulwark.E008"]
    assert path in _hinted("bulwark.E008").msg


def test_manage_py_check_reports_an_error_by_id_and_exits_non_zero(tmp_path):
    """The checks run with manage.py (a real process with a settings module that breaks one rule)."""
    (tmp_path / "broken_settings.py").write_text(
        "from settings.test import *  # noqa: F403\nDATABASE_ROUTERS = []\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--settings", "broken_settings"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "bulwark.E003" in result.stderr and "HINT" in result.stderr
    assert "Traceback" not in result.stderr
