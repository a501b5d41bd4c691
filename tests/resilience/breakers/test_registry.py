"""The registry's breakers: configured from settings, logged, counted, steered by the operator switches."""

from __future__ import annotations

import logging

import pytest
from django.urls import reverse
from prometheus_client import REGISTRY

from resilience.breakers.breaker import CircuitOpenError, Forced, State
from resilience.breakers.controls import breaker_force_set, force_key, forced_mode
from resilience.breakers.exceptions import ExternalClientError, ExternalServerError
from resilience.breakers.registry import breaker_get, breakers_snapshot, reset_breakers
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.state import controls_replace
from resilience.staff.otp import otp_enroll
from tests.factories import UserFactory
from tests.second_factor import verified_login

NAME = "payment_gateway"


@pytest.fixture(autouse=True)
def _fresh_breakers(settings):
    settings.BULWARK_BREAKERS = {NAME: {"failure_threshold": 2, "reset_timeout": 30}}
    reset_breakers()
    yield
    reset_breakers()


def _fail() -> None:
    raise ExternalServerError(NAME, 500, "synthetic")


def _trip(breaker) -> None:
    for _ in range(2):
        with pytest.raises(ExternalServerError):
            breaker.call(_fail)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_breaker_get_is_one_per_name_configured_from_settings():
    breaker = breaker_get(NAME)
    assert breaker is breaker_get(NAME)
    assert breaker.config.failure_threshold == 2 and breaker.config.reset_timeout == 30


def test_client_errors_never_count():
    breaker = breaker_get(NAME)

    def declined() -> None:
        raise ExternalClientError(NAME, 402, "declined")

    for _ in range(5):
        with pytest.raises(ExternalClientError):
            breaker.call(declined)
    assert breaker.state is State.CLOSED


def test_state_change_is_logged_structured_and_counted(caplog):
    transitions = _sample("bulwark_breaker_transitions_total", breaker=NAME, from_state="closed", to_state="open")
    failures = _sample("bulwark_breaker_calls_total", breaker=NAME, outcome="failure")
    breaker = breaker_get(NAME)
    with caplog.at_level(logging.INFO, logger="resilience.breakers"):
        _trip(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: None)
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "breaker_state_changed"]
    assert record.levelno == logging.WARNING
    assert (record.breaker, record.from_state, record.to_state) == (NAME, "closed", "open")
    assert "2 consecutive failures" in record.reason
    assert (
        _sample("bulwark_breaker_transitions_total", breaker=NAME, from_state="closed", to_state="open")
        == transitions + 1
    )
    assert _sample("bulwark_breaker_calls_total", breaker=NAME, outcome="failure") == failures + 2
    assert _sample("bulwark_breaker_state", breaker=NAME, state="open") == 1
    assert _sample("bulwark_breaker_state", breaker=NAME, state="closed") == 0
    assert _sample("bulwark_breaker_calls_total", breaker=NAME, outcome="rejected") >= 1


def test_snapshot_lists_every_configured_breaker():
    snapshot = breakers_snapshot()
    assert snapshot[NAME]["state"] == "closed"
    assert snapshot[NAME]["failure_threshold"] == 2


def test_switches_force_the_breaker_in_this_process():
    breaker = breaker_get(NAME)
    controls_replace([(force_key(NAME, "force_open"), True)])
    with pytest.raises(CircuitOpenError) as excinfo:
        breaker.call(lambda: None)
    assert excinfo.value.forced
    assert _sample("bulwark_breaker_forced", breaker=NAME) == 1
    controls_replace([(force_key(NAME, "force_closed"), True)])
    _trip(breaker)
    assert breaker.call(lambda: "called") == "called"
    controls_replace([])
    assert breaker.forced is Forced.AUTOMATIC


def test_both_switches_on_means_open():
    controls_replace([(force_key(NAME, "force_open"), True), (force_key(NAME, "force_closed"), True)])
    assert forced_mode(NAME) is Forced.OPEN


@pytest.mark.django_db
def test_breaker_force_set_keeps_the_switches_exclusive_and_audits():
    boss = UserFactory(username="ops")
    breaker_force_set(name=NAME, mode=Forced.OPEN, actor=boss, reason="gateway incident")
    breaker_force_set(name=NAME, mode=Forced.CLOSED, actor=boss, reason="gateway fixed, skip the trial")
    assert dict(OperatorControl.objects.values_list("key", "enabled")) == {
        force_key(NAME, "force_open"): False,
        force_key(NAME, "force_closed"): True,
    }
    breaker_force_set(name=NAME, mode=Forced.AUTOMATIC, actor=boss, reason="back to normal")
    assert not OperatorControl.objects.filter(enabled=True).exists()
    audit = list(ControlAuditEntry.objects.order_by("id").values_list("key", "enabled", "actor_name"))
    assert audit == [
        (force_key(NAME, "force_open"), True, "ops"),
        (force_key(NAME, "force_open"), False, "ops"),
        (force_key(NAME, "force_closed"), True, "ops"),
        (force_key(NAME, "force_closed"), False, "ops"),
    ]
    assert forced_mode(NAME) is Forced.AUTOMATIC  # applied in this process on commit


@pytest.mark.django_db(transaction=True)
def test_breaker_force_set_is_obeyed_by_this_process_on_commit():
    breaker_force_set(name=NAME, mode=Forced.OPEN, actor=None, reason="incident")
    with pytest.raises(CircuitOpenError):
        breaker_get(NAME).call(lambda: None)


@pytest.mark.django_db
def test_admin_offers_breaker_switches_and_forcing_one_switches_the_other_off(client):
    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    verified_login(client, boss, otp_enroll(user=boss))  # changing a control needs a verified second factor
    add = reverse("admin:resilience_operatorcontrol_add")
    page = client.get(add).content.decode()
    assert force_key(NAME, "force_open") in page and force_key(NAME, "force_closed") in page
    for key in ("force_open", "force_closed"):
        response = client.post(add, {"key": force_key(NAME, key), "enabled": "on", "reason": "drill"})
        assert response.status_code == 302, response.content[:2000]
    assert dict(OperatorControl.objects.values_list("key", "enabled")) == {
        force_key(NAME, "force_open"): False,
        force_key(NAME, "force_closed"): True,
    }
    assert ControlAuditEntry.objects.filter(actor_name="boss").count() == 3
