"""The admin's resilience dashboard: who sees it, what it shows, and its controls (confirmed, audited, obeyed) —
against the test stack's real PostgreSQL and Redis."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from resilience.auth.ring import ring_cache
from resilience.breakers.registry import breaker_get
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.state import READ_ONLY, db_controls, switches
from resilience.db.nodes import PRIMARY, registry
from resilience.staff.otp import otp_enroll
from tests.factories import UserFactory
from tests.helpers import HEALTH_AREAS, assert_error
from tests.redis_servers import dead_redis_cache
from tests.second_factor import verified_login

DASHBOARD = "/admin/resilience/"
CONTROL = "/admin/resilience/control/"
BREAKER = "payment_gateway"


@pytest.fixture
def operator(db):
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


def _operate_as(client, user) -> None:
    """Log in with a session verified by a second factor: the controls need it (resilience/staff/otp.py)."""
    verified_login(client, user, otp_enroll(user=user))


@pytest.fixture
def operator_client(client, operator):
    _operate_as(client, operator)
    return client


@pytest.fixture
def viewer_client(client, db):
    """Staff who may look at everything but change nothing: no operate permission."""
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    return client


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def _post(client, **data):
    return client.post(CONTROL, {"reason": "dashboard test", **data}, follow=True)


def test_anonymous_is_sent_to_the_login(client, db):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_replaces_the_resilience_app_index(operator_client):
    assert reverse("admin:app_list", args=["resilience"]) == DASHBOARD
    response = operator_client.get(DASHBOARD)
    assert response.status_code == 200
    assert response.templates[0].name == "resilience/dashboard.html"
    assert "Bulwark administration" in response.content.decode()


def test_it_shows_the_scorecard_the_workers_the_keys_and_the_controls(operator_client):
    ring_cache.current()  # this worker has read the ring
    body = operator_client.get(DASHBOARD).content.decode()
    areas = re.findall(r'data-area="(\w+)" data-status="(pass|warn|fail)"', body)
    assert [area for area, _ in areas] == HEALTH_AREAS
    score = int(re.search(r"Current SPOF Score: (\d)/8 Areas at Risk", body).group(1))
    assert score == body.count('class="rz-risk"')
    assert 'data-node="default"' in body and 'data-node="replica_1"' in body
    assert f'data-breaker="{BREAKER}"' in body
    assert 'data-kid="env-' in body  # the environment key signs
    assert f'data-switch="{READ_ONLY}"' in body
    assert 'id="rz-rotate"' in body


def test_state_json_names_every_area_and_this_worker(operator_client):
    state = operator_client.get(DASHBOARD + "state.json").json()
    assert [area["area"] for area in state["areas"]] == HEALTH_AREAS
    assert state["score"]["total"] == 8
    assert state["score"]["at_risk"] == sum(area["at_risk"] for area in state["areas"])
    assert state["worker"] in [worker["id"] for worker in state["fleet"]["workers"]]
    assert state["fleet"]["shared"] is True  # Redis answers


def test_a_get_writes_nothing(operator_client):
    operator_client.get(DASHBOARD)  # the session and the user are loaded once
    with CaptureQueriesContext(connections[PRIMARY]) as captured:  # unit tests read on the primary (conftest)
        for url in (DASHBOARD, DASHBOARD + "panels/", DASHBOARD + "state.json"):
            assert operator_client.get(url).status_code == 200
    statements = [query["sql"].split()[0].upper() for query in captured.captured_queries]
    assert "SELECT" in statements, "the dashboard reads the events and the user"
    assert set(statements) <= {"SELECT"}, statements


@pytest.mark.usefixtures("fresh_circuits")
def test_with_redis_down_it_says_it_shows_only_this_worker(operator_client, settings):
    settings.CACHES = {"default": dead_redis_cache()}
    body = operator_client.get(DASHBOARD).content.decode()
    assert "can only show the worker that served" in body
    assert body.count('class="rz-worker"') == 1


def test_a_dangerous_control_asks_for_confirmation_and_changes_nothing_until_then(operator_client):
    response = operator_client.post(CONTROL, {"action": "switch", "target": READ_ONLY, "value": "on", "reason": "x"})
    assert response.status_code == 200
    assert 'id="rz-confirm"' in response.content.decode()
    assert "503 read_only_mode" in response.content.decode()  # it says what will happen
    assert not OperatorControl.objects.filter(key=READ_ONLY, enabled=True).exists()


def test_a_confirmed_control_is_stored_and_audited(operator_client, operator):
    response = _post(operator_client, action="switch", target=READ_ONLY, value="on", confirmed="on")
    assert response.redirect_chain[-1][0] == DASHBOARD
    assert any("done" in message for message in _messages(response))
    audit = ControlAuditEntry.objects.get(key=READ_ONLY)
    assert (audit.enabled, audit.actor, audit.actor_name, audit.reason) == (
        True,
        operator,
        "operator",
        "dashboard test",
    )
    assert OperatorControl.objects.get(key=READ_ONLY).enabled


@pytest.mark.django_db(transaction=True)
def test_read_only_mode_from_the_dashboard_refuses_api_writes_and_can_be_switched_off(client, api_client):
    _operate_as(client, UserFactory(username="op", is_staff=True, is_superuser=True))
    _post(client, action="switch", target=READ_ONLY, value="on", confirmed="on")
    assert db_controls().read_only  # obeyed by this process at commit
    refused = api_client.post(
        "/api/auth/register/",
        {"username": "newbie", "email": "n@example.com", "password": "long-pass-123!"},
        format="json",
    )
    assert_error(refused, 503, "read_only_mode")
    # Switching it off is a write too: maintenance mode must not lock the operator out of ending it.
    response = _post(client, action="switch", target=READ_ONLY, value="off")
    assert any("done" in message for message in _messages(response)), _messages(response)
    assert not db_controls().read_only
    created = api_client.post(
        "/api/auth/register/",
        {"username": "newbie", "email": "n@example.com", "password": "long-pass-123!"},
        format="json",
    )
    assert created.status_code == 201, created.content


@pytest.mark.django_db(transaction=True)
def test_breaker_controls_force_and_retry(client):
    _operate_as(client, UserFactory(username="op", is_staff=True, is_superuser=True))
    _post(client, action="breaker", target=BREAKER, value="open", confirmed="on")
    assert breaker_get(BREAKER).snapshot()["state"] == "open"
    assert switches()[f"breaker.{BREAKER}.force_open"] is True
    _post(client, action="breaker", target=BREAKER, value="retry")  # not dangerous: no confirmation
    assert switches()[f"breaker.{BREAKER}.force_open"] is False
    assert breaker_get(BREAKER).snapshot()["state"] == "half_open"  # back from forced open: a trial call first
    assert ControlAuditEntry.objects.filter(key=f"breaker.{BREAKER}.retry_now", actor_name="op").exists()


def test_rotating_the_key_from_the_dashboard(operator_client):
    before = ring_cache.current().signer.kid
    response = _post(operator_client, action="rotate_key", confirmed="on")
    ring_cache.invalidate()
    after = ring_cache.current().signer.kid
    assert after != before and after.startswith("db-")
    assert any(after in message for message in _messages(response))


def test_a_control_without_a_reason_or_with_an_unknown_target_changes_nothing(operator_client):
    response = operator_client.post(
        CONTROL, {"action": "switch", "target": "db.nonsense", "value": "on", "confirmed": "on"}, follow=True
    )
    text = " ".join(_messages(response))
    assert "Nothing changed" in text and "reason" in text and "unknown switch" in text
    assert not OperatorControl.objects.exists()


def test_with_the_primary_down_a_control_says_so_and_the_page_still_works(operator_client):
    operator_client.get(DASHBOARD)
    registry().mark_down(PRIMARY, "test: the primary is down")
    response = _post(operator_client, action="switch", target=READ_ONLY, value="on", confirmed="on")
    assert response.status_code == 200
    assert any("primary database is down" in message for message in _messages(response))
    assert "cannot change now" in response.content.decode()
    assert not ControlAuditEntry.objects.exists()


def test_staff_without_the_operate_permission_can_look_but_not_change(viewer_client):
    body = viewer_client.get(DASHBOARD).content.decode()
    assert "You can look but not change" in body
    assert 'id="rz-rotate"' not in body
    refused = viewer_client.post(
        CONTROL, {"action": "switch", "target": READ_ONLY, "value": "on", "reason": "x", "confirmed": "on"}
    )
    assert refused.status_code == 403
    assert not OperatorControl.objects.exists()
    # ... nor through the model admin pages
    assert viewer_client.get(reverse("admin:resilience_operatorcontrol_add")).status_code == 403
    keys = viewer_client.get(reverse("admin:resilience_signingkey_changelist"))
    assert keys.status_code == 200
    assert b'value="rotate"' not in keys.content


def test_the_operate_permission_with_a_verified_second_factor_unlocks_the_controls(client, db):
    user = UserFactory(username="oncall", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="operate_controls"))
    client.force_login(user)  # the permission alone: look only (tests/resilience/staff/test_otp.py)
    assert "enrol a second factor to operate" in client.get(DASHBOARD).content.decode()
    assert _post(client, action="switch", target=READ_ONLY, value="on", confirmed="on").status_code == 403
    _operate_as(client, user)
    response = _post(client, action="switch", target=READ_ONLY, value="on", confirmed="on")
    assert any("done" in message for message in _messages(response))
    assert OperatorControl.objects.get(key=READ_ONLY).enabled


def test_it_shows_each_traffic_class_with_its_limit_and_what_is_in_flight(operator_client):
    from resilience.serving.bulkheads import worker_bulkheads

    permit = worker_bulkheads().enter("checkout")
    try:
        body = operator_client.get(DASHBOARD).content.decode()
        state = operator_client.get(DASHBOARD + "state.json").json()
    finally:
        permit.release()
    for name in ("catalog", "auth", "checkout", "admin", "ops"):
        assert f'data-traffic-class="{name}"' in body
    rows = {row["name"]: row for row in state["traffic"]}
    assert rows["checkout"]["in_flight"] >= 1  # this worker's own snapshot, taken while the permit was held
    assert rows["catalog"]["limit"] == 4 and rows["catalog"]["budget"] == 5.0 and rows["catalog"]["max_body"] == "16k"
    assert state["bulkheads_off"] == 0
