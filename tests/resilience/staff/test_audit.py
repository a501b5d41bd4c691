"""Staff log-ins on record: success, failure and refusal as resilience events (who, from where, when; never the
password), bursts of failures for one account as an event and a counter, the admin's list and search, and the
dashboard's events. Only admin log-ins: the API's token log-ins and the test client's force_login are not."""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Iterator

import pytest
from django.test import RequestFactory
from django.urls import reverse
from prometheus_client import REGISTRY

from resilience.events import event_record, events_flush
from resilience.events.buffer import BufferedEvent, events_buffer
from resilience.staff import audit
from resilience.staff.audit import staff_login_failure_record
from resilience.staff.models import STAFF_LOGIN_KINDS, StaffLogin
from tests.factories import TEST_PASSWORD, UserFactory
from tests.redis_servers import dead_redis_cache

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_circuits")]

LOGIN = "/admin/login/?next=/admin/"
WRONG_PASSWORD = "Wr0ng-Pa55word-never-stored"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AuditTest/1.0"
DAY = 86400
CHANGELIST = reverse("admin:resilience_stafflogin_changelist")


@pytest.fixture(autouse=True)
def _empty_event_buffer() -> Iterator[None]:
    events_buffer.reset()
    yield
    events_buffer.reset()


def an_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def a_name(prefix: str = "staff") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def buffered(*kinds: str) -> list[BufferedEvent]:
    wanted = kinds or STAFF_LOGIN_KINDS
    return [event for event in events_buffer.pending() if event.kind in wanted]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def login(client, username: str, ip: str, password: str = WRONG_PASSWORD):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=ip,
        HTTP_USER_AGENT=USER_AGENT,
    )


@pytest.fixture
def staff():
    return UserFactory(username=a_name(), is_staff=True)


def assert_no_password(events: list[BufferedEvent], caplog: pytest.LogCaptureFixture, *passwords: str) -> None:
    text = json.dumps([event.as_dict(buffered=True) for event in events], default=str) + caplog.text
    for password in passwords:
        assert password not in text


# ---- success, failure, refusal -----------------------------------------------------------------------------------


def test_a_successful_admin_login_is_recorded_with_who_where_and_when(client, staff, caplog) -> None:
    caplog.set_level(logging.INFO, logger="resilience.staff")
    before = sample("bulwark_staff_logins_total", outcome="success")
    ip = an_ip()
    assert login(client, staff.username, ip, password=TEST_PASSWORD).status_code == 302
    [event] = buffered()
    assert event.kind == "staff_login" and event.severity == "info" and event.subject == staff.username
    assert event.detail == {"ip": ip, "user_agent": USER_AGENT, "user_id": staff.pk, "outcome": "success"}
    assert staff.username in event.message and ip in event.message and event.at and event.worker
    assert sample("bulwark_staff_logins_total", outcome="success") == before + 1
    assert_no_password(buffered(), caplog, TEST_PASSWORD)


def test_a_wrong_password_is_recorded_with_the_account_and_never_the_password(client, staff, caplog) -> None:
    caplog.set_level(logging.INFO, logger="resilience.staff")
    before = sample("bulwark_staff_logins_total", outcome="failure")
    ip, ghost = an_ip(), a_name("ghost")
    assert login(client, staff.username, ip).status_code == 200
    assert login(client, ghost, ip).status_code == 200
    first, second = buffered()
    assert first.kind == second.kind == "staff_login_failed"
    assert first.subject == staff.username and second.subject == ghost
    assert first.detail == {"ip": ip, "user_agent": USER_AGENT, "user_id": staff.pk, "outcome": "failure"}
    assert second.detail["user_id"] is None  # no such account
    assert sample("bulwark_staff_logins_total", outcome="failure") == before + 2
    assert_no_password(buffered(), caplog, WRONG_PASSWORD)


def test_an_inactive_account_with_its_right_password_is_a_failure(client) -> None:
    inactive = UserFactory(username=a_name(), is_staff=True, is_active=False)
    assert login(client, inactive.username, an_ip(), password=TEST_PASSWORD).status_code == 200
    assert [event.kind for event in buffered()] == ["staff_login_failed"]


def test_a_refusal_is_counted_every_time_and_recorded_once_per_window(client, settings, staff, caplog) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {"admin_login": (1000, DAY), "admin_login_user": (1, DAY)}
    before = sample("bulwark_staff_logins_total", outcome="refused")
    ips = [an_ip() for _ in range(4)]
    assert login(client, staff.username, ips[0]).status_code == 200
    assert [login(client, staff.username, ip, password=TEST_PASSWORD).status_code for ip in ips[1:]] == [429] * 3
    assert sample("bulwark_staff_logins_total", outcome="refused") == before + 3
    [refused] = buffered("staff_login_refused")
    assert refused.subject == staff.username and refused.severity == "warning"
    assert refused.detail["ip"] == ips[1] and refused.detail["user_agent"] == USER_AGENT
    assert refused.detail["outcome"] == "refused" and refused.detail["user_id"] is None
    assert refused.detail["scope"] == "admin_login_user" and refused.detail["form"] == "login"
    assert 1 <= refused.detail["retry_after"] <= DAY
    assert not buffered("staff_login")  # the right password did not get through
    assert_no_password(buffered(), caplog, TEST_PASSWORD, WRONG_PASSWORD)


def test_a_refused_password_change_is_recorded_for_the_signed_in_user(client, settings, staff) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {"admin_login": (1000, DAY), "admin_login_user": (1, DAY)}
    client.force_login(staff)
    new = "a new password that is long enough"
    data = {"old_password": WRONG_PASSWORD, "new_password1": new, "new_password2": new, "username": "someone-else"}
    assert client.post("/admin/password_change/", data, REMOTE_ADDR=an_ip()).status_code == 200
    assert client.post("/admin/password_change/", data, REMOTE_ADDR=an_ip()).status_code == 429
    [refused] = buffered()
    assert refused.kind == "staff_login_refused" and refused.subject == staff.username
    assert refused.detail["form"] == "password_change" and refused.detail["scope"] == "admin_login_user"


def test_token_logins_and_force_login_are_not_staff_logins(client, api_client, staff) -> None:
    api_client.post("/api/auth/token/", {"username": staff.username, "password": "nope"}, format="json")
    api_client.post("/api/auth/token/", {"username": staff.username, "password": TEST_PASSWORD}, format="json")
    client.force_login(staff)
    assert not buffered()


def test_the_form_reports_a_right_password_of_an_account_that_is_not_staff() -> None:
    """Django sends no signal when the password is right but the admin form refuses the account: the form calls
    staff_login_failure_record itself (outside the admin nothing is recorded)."""
    customer = UserFactory(username=a_name("customer"))
    request = RequestFactory().post("/admin/login/", REMOTE_ADDR="10.9.8.7", HTTP_USER_AGENT=USER_AGENT)
    staff_login_failure_record(request, username=customer.username, user=customer, outcome="not_staff")
    [event] = buffered()
    assert event.kind == "staff_login_failed" and event.subject == customer.username
    assert event.detail == {"ip": "10.9.8.7", "user_agent": USER_AGENT, "user_id": customer.pk, "outcome": "not_staff"}
    staff_login_failure_record(RequestFactory().post("/api/auth/token/"), username=customer.username)
    assert len(buffered()) == 1


def test_long_usernames_and_user_agents_are_cut(client) -> None:
    long_name, long_agent = "x" * 400, "A" * 2000
    client.post(LOGIN, {"username": long_name, "password": "p"}, REMOTE_ADDR=an_ip(), HTTP_USER_AGENT=long_agent)
    [event] = buffered()
    assert len(event.subject) == audit.USERNAME_MAX and len(event.detail["user_agent"]) == audit.USER_AGENT_MAX


# ---- bursts -------------------------------------------------------------------------------------------------------


def test_a_burst_of_failures_for_one_account_is_an_event_and_a_counter_once_per_window(client, staff) -> None:
    before = sample("bulwark_staff_login_bursts_total")
    for n in range(audit.BURST_FAILURES - 1):
        login(client, staff.username if n % 2 else staff.username.upper(), an_ip())
    assert not buffered("staff_login_burst")
    last_ip = an_ip()
    login(client, staff.username, last_ip)
    [burst] = buffered("staff_login_burst")
    assert burst.subject == staff.username and burst.severity == "warning"
    assert burst.detail["failures"] == audit.BURST_FAILURES and burst.detail["ip"] == last_ip
    assert burst.detail["window_seconds"] == audit.BURST_WINDOW and burst.detail["user_id"] == staff.pk
    assert sample("bulwark_staff_login_bursts_total") == before + 1
    for _ in range(3):  # more failures in the same window: no second burst
        login(client, staff.username, an_ip())
    assert len(buffered("staff_login_burst")) == 1
    assert sample("bulwark_staff_login_bursts_total") == before + 1
    login(client, a_name("other"), an_ip())  # another account's failures are counted apart
    assert len(buffered("staff_login_burst")) == 1


def test_with_redis_dead_bursts_are_counted_in_memory(client, settings, staff) -> None:
    settings.CACHES = {"default": dead_redis_cache()}
    for _ in range(audit.BURST_FAILURES):
        assert login(client, staff.username, an_ip()).status_code == 200
    assert len(buffered("staff_login_failed")) == audit.BURST_FAILURES
    assert len(buffered("staff_login_burst")) == 1


# ---- where they are shown --------------------------------------------------------------------------------------


@pytest.fixture
def recorded(client, staff) -> dict[str, StaffLogin]:
    """A success, a failure from another address and an unrelated event, written to the database."""
    login(client, staff.username, "10.20.30.40", password=TEST_PASSWORD)
    client.logout()
    login(client, "mallory", "192.0.2.77")
    event_record("db_node_down", subject="replica_1", message="Database node replica_1 is down")
    events_flush()
    return {event.kind: event for event in StaffLogin.objects.all()}


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username=a_name("boss"), is_staff=True, is_superuser=True))
    return client


def _listed(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.status_code
    return sorted((event.kind, event.subject) for event in response.context["cl"].result_list)


def test_the_admin_lists_staff_logins_only_and_searches_username_and_ip(recorded, admin_client, staff) -> None:
    assert set(recorded) == {"staff_login", "staff_login_failed"}
    everything = [("staff_login", staff.username), ("staff_login_failed", "mallory")]
    assert _listed(admin_client.get(CHANGELIST)) == everything
    assert _listed(admin_client.get(CHANGELIST, {"q": "mallory"})) == [("staff_login_failed", "mallory")]
    assert _listed(admin_client.get(CHANGELIST, {"q": staff.username.upper()})) == [("staff_login", staff.username)]
    assert _listed(admin_client.get(CHANGELIST, {"q": "192.0.2.77"})) == [("staff_login_failed", "mallory")]
    assert _listed(admin_client.get(CHANGELIST, {"q": "10.20.30"})) == [("staff_login", staff.username)]
    assert _listed(admin_client.get(CHANGELIST, {"q": "replica_1"})) == []
    assert _listed(admin_client.get(CHANGELIST, {"kind": "staff_login_failed"})) == [("staff_login_failed", "mallory")]
    page = admin_client.get(CHANGELIST).content.decode()
    for shown in ("192.0.2.77", "10.20.30.40", "success", "failure", recorded["staff_login"].worker):
        assert shown in page


def test_the_admin_list_is_read_only(recorded, admin_client) -> None:
    event = recorded["staff_login_failed"]
    assert admin_client.get(reverse("admin:resilience_stafflogin_add")).status_code == 403
    change = admin_client.get(reverse("admin:resilience_stafflogin_change", args=[event.pk]))
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    delete = admin_client.post(reverse("admin:resilience_stafflogin_delete", args=[event.pk]), {"post": "yes"})
    assert delete.status_code == 403
    assert StaffLogin.objects.filter(pk=event.pk).exists()


def test_the_dashboard_shows_them_among_the_recent_events(recorded, admin_client, staff) -> None:
    panels = admin_client.get(reverse("admin:resilience_panels")).content.decode()
    assert 'data-kind="staff_login"' in panels and 'data-kind="staff_login_failed"' in panels
    assert staff.username in panels and "mallory" in panels
