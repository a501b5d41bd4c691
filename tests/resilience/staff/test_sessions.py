"""Revocable staff sessions (resilience/staff/sessions.py), through the Django test client against the real stack.

A "copied cookie" is the ``sessionid`` value of one client set on a second client. "Another worker" is this
process with its own memory of the bumps forgotten (``staff_epochs.forget_floor``) and its cache memory cleared;
the primary is killed by pointing its alias at a port where nothing listens (tests.helpers.dead), Redis by a
cache at a dead address or a real redis-server of our own that is killed and started again.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from resilience.db.nodes import PRIMARY, registry
from resilience.events.buffer import events_buffer
from resilience.staff import sessions
from resilience.staff.models import StaffSessionEpoch
from resilience.staff.sessions import (
    ACTIVE_SESSION_KEY,
    CACHE_PREFIX,
    EPOCH_SESSION_KEY,
    session_epoch_bump,
    session_epoch_current,
    session_epochs_flush,
    session_epochs_share,
    staff_epochs,
)
from tests.factories import TEST_PASSWORD, UserFactory
from tests.helpers import dead, poll
from tests.redis_servers import RedisProcess, dead_redis_cache

REPLICA = "replica_1"
ADMIN = "/admin/"
LOGIN = "/admin/login/"
LOGOUT = "/admin/logout/"
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


@pytest.fixture(autouse=True)
def _fresh_state():
    staff_epochs.reset()
    events_buffer.reset()
    yield
    staff_epochs.reset()
    events_buffer.reset()
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def _staff(**extra):
    return UserFactory(is_staff=True, is_superuser=True, **extra)


def _form_login(user) -> Client:
    """The admin's login form, as a browser posts it."""
    client = Client()
    assert client.get(f"{LOGIN}?next={ADMIN}").status_code == 200
    response = client.post(LOGIN, {"username": user.username, "password": TEST_PASSWORD, "next": ADMIN})
    assert response.status_code == 302 and response["Location"] == ADMIN, response.content[:500]
    return client


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)  # Django's login(): the user_logged_in signal stamps the session
    return client


def _cookie(client: Client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _copy(cookie: str) -> Client:
    """A second client with a copy of the session cookie (a new one each time: a refusal deletes its cookie)."""
    thief = Client()
    thief.cookies[settings.SESSION_COOKIE_NAME] = cookie
    return thief


def _browses(client: Client) -> bool:
    response = client.get(ADMIN)
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and response["Location"].startswith(LOGIN), response
    return False


def _refused_with_message(client: Client) -> None:
    response = client.get(ADMIN)
    assert response.status_code == 302, response
    assert response["Location"] == f"{LOGIN}?next={ADMIN}"
    assert [m.message for m in get_messages(response.wsgi_request)] == [sessions.ENDED_MESSAGE]
    assert not client.cookies[settings.SESSION_COOKIE_NAME].value  # the session cookie is deleted
    assert client.get(LOGIN).status_code == 200  # the login form, no loop


def _as_another_worker() -> None:
    """Forget this process's own bumps and its cache memory: what a worker that did not serve the bump knows."""
    staff_epochs.forget_floor()
    caches["default"]._memory.clear()


def _ended_events(user) -> list:
    return [e for e in events_buffer.pending() if e.kind == "staff_sessions_ended" and e.subject == user.username]


def _replicated(user) -> None:
    deadline = time.monotonic() + 10
    while not type(user).objects.using(REPLICA).filter(pk=user.pk).exists():
        assert time.monotonic() < deadline, "the replica did not replay the user"
        time.sleep(0.05)


def _primary_back() -> None:
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def _stored(user) -> int:
    return StaffSessionEpoch.objects.using(PRIMARY).get(pk=user.pk).epoch


# ---- all up ------------------------------------------------------------------------------------------------


def test_a_copied_session_cookie_is_refused_after_logout():
    boss = _staff()
    browser = _form_login(boss)
    stolen = _cookie(browser)
    assert _browses(_copy(stolen))
    assert browser.post(LOGOUT).status_code == 200  # "Logged out"
    _refused_with_message(_copy(stolen))
    assert _stored(boss) == 1
    [event] = _ended_events(boss)
    assert event.detail == {"by": boss.username, "reason": "logged out", "epoch": 1, "deferred": False}

    again = _cookie(_form_login(boss))  # a new login gets the new epoch
    _as_another_worker()
    assert _browses(_copy(again))  # the shared cache, then the database, say epoch 1
    caches["default"].delete(f"{CACHE_PREFIX}{boss.pk}")
    assert _browses(_copy(again))
    assert not _browses(_copy(stolen))


def test_another_worker_refuses_the_copied_cookie_at_once_through_redis():
    boss = _staff()
    browser = _logged_in(boss)
    stolen = _cookie(browser)
    assert _browses(_copy(stolen))
    browser.post(LOGOUT)
    _as_another_worker()
    assert caches["default"].get(f"{CACHE_PREFIX}{boss.pk}") == 1  # Redis (the stack's)
    assert not _browses(_copy(stolen))


def test_a_session_without_the_epoch_stamp_is_ended():
    client = _logged_in(_staff())
    session = client.session
    del session[EPOCH_SESSION_KEY]  # opened before revocable sessions existed
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    _refused_with_message(client)


def test_a_password_change_ends_the_other_sessions_and_keeps_the_changers():
    boss = _staff()
    changer, other = _form_login(boss), _logged_in(boss)
    copied = _copy(_cookie(changer))
    response = changer.post(
        reverse("admin:password_change"),
        {
            "old_password": TEST_PASSWORD,
            "new_password1": "a new long passphrase 1",
            "new_password2": "a new long passphrase 1",
        },
    )
    assert response.status_code == 302, response.content[:1000]
    assert _browses(changer)  # re-stamped, as update_session_auth_hash keeps it
    assert not _browses(other) and not _browses(copied)
    assert _stored(boss) == 1
    [event] = _ended_events(boss)
    assert event.detail["reason"] == "password changed" and event.detail["by"] == boss.username


def test_a_superuser_changing_another_staff_users_password_ends_their_sessions_only():
    boss, clerk = _staff(), _staff()
    boss_client, clerk_client = _logged_in(boss), _logged_in(clerk)
    response = boss_client.post(
        reverse("admin:auth_user_password_change", args=[clerk.pk]),
        {"password1": "another long passphrase", "password2": "another long passphrase", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content[:1000]
    assert _browses(boss_client)
    assert not _browses(clerk_client)
    assert _stored(clerk) == 1 and not StaffSessionEpoch.objects.filter(pk=boss.pk).exists()
    [event] = _ended_events(clerk)
    assert event.detail["by"] == boss.username


def test_a_password_hash_upgrade_at_login_is_not_a_change(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    boss = _staff()  # hashed with MD5: upgraded by the next login
    other = _logged_in(boss)
    _form_login(boss)
    assert get_user_model().objects.get(pk=boss.pk).password.startswith("pbkdf2_")
    assert _browses(other)
    assert not _ended_events(boss)


def test_the_admin_action_ends_every_session_of_the_selected_users():
    boss, clerk, intern = _staff(), _staff(), _staff()
    boss_client, clerk_client, intern_client = _logged_in(boss), _logged_in(clerk), _logged_in(intern)
    clerk_copy = _copy(_cookie(clerk_client))
    response = boss_client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "end_staff_sessions", "_selected_action": [clerk.pk, intern.pk]},
    )
    assert response.status_code == 302, response.content[:1000]
    assert _browses(boss_client)
    assert not _browses(clerk_client) and not _browses(clerk_copy) and not _browses(intern_client)
    for user in (clerk, intern):
        [event] = _ended_events(user)
        assert event.detail["by"] == boss.username and event.detail["reason"] == "ended by an administrator"


def test_the_second_factor_hook_ends_the_sessions_and_may_keep_the_current_one():
    boss = _staff()
    client = _logged_in(boss)
    request = client.get(ADMIN).wsgi_request
    assert session_epoch_bump(user=boss, reason="second factor removed") == 1  # what resilience/staff/otp.py calls
    assert not _browses(client)
    [event] = _ended_events(boss)
    assert event.detail["by"] == "system" and event.detail["reason"] == "second factor removed"
    assert session_epoch_bump(user=boss, reason="second factor removed", keep_session=request) == 2
    assert request.session[EPOCH_SESSION_KEY] == 2  # that session is re-stamped: it stays valid


# ---- idle timeout ------------------------------------------------------------------------------------------


def test_an_idle_session_ends_and_activity_keeps_it(settings, monkeypatch):
    settings.BULWARK_CONFIG = dataclasses.replace(settings.BULWARK_CONFIG, staff_session_idle=timedelta(minutes=2))
    clock = SimpleNamespace(now=time.time())
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: clock.now))
    client = _logged_in(_staff())
    stamped = client.session[ACTIVE_SESSION_KEY]

    clock.now += 30
    assert _browses(client)
    assert client.session[ACTIVE_SESSION_KEY] == stamped  # refreshed at most once a minute: no new cookie yet
    clock.now += 40
    assert _browses(client)
    assert client.session[ACTIVE_SESSION_KEY] == stamped + 70
    clock.now += 100  # 100 s since the last activity: still within 2 min
    assert client.get(reverse("admin:resilience_panels")).status_code == 200  # the dashboard's auto-refresh...
    assert client.session[ACTIVE_SESSION_KEY] == stamped + 70  # ... is not activity
    clock.now += 30
    response = client.get(ADMIN)
    assert response.status_code == 302 and response["Location"] == f"{LOGIN}?next={ADMIN}"
    assert [m.message for m in get_messages(response.wsgi_request)] == [sessions.IDLE_MESSAGE.format(idle="2 min")]
    assert client.get(LOGIN).status_code == 200


# ---- the primary down --------------------------------------------------------------------------------------


def test_with_the_primary_down_the_bump_goes_to_the_cache_and_is_written_when_it_is_back():
    boss = _staff()
    browser = _logged_in(boss)
    stolen = _cookie(browser)
    _replicated(boss)
    with dead(PRIMARY):
        assert _browses(_copy(stolen))  # the admin works on the replica
        assert browser.post(LOGOUT).status_code == 200
        assert not _browses(_copy(stolen))
        _as_another_worker()
        assert not _browses(_copy(stolen))  # Redis holds the bump
        assert staff_epochs.pending() == {boss.pk: 1}
        assert session_epochs_flush() == 0  # still down: kept
        assert staff_epochs.pending() == {boss.pk: 1}
        [event] = _ended_events(boss)
        assert event.detail["deferred"] is True
        relogged = _cookie(_logged_in(boss))  # a login during the outage gets the cache's epoch
        assert _browses(_copy(relogged))
    _primary_back()
    assert not StaffSessionEpoch.objects.using(PRIMARY).filter(pk=boss.pk).exists()
    assert session_epochs_flush() == 1  # the monitor's task once the primary answers
    assert staff_epochs.pending() == {}
    assert _stored(boss) == 1
    _as_another_worker()
    caches["default"].delete(f"{CACHE_PREFIX}{boss.pk}")  # the database alone refuses it now
    assert not _browses(_copy(stolen))
    assert _browses(_copy(relogged))


def test_a_bump_after_the_outage_starts_above_what_the_cache_holds():
    """A worker that bumped in the cache during the outage died before writing it: the next bump still ends the
    sessions opened meanwhile."""
    boss = _staff()
    _replicated(boss)
    with dead(PRIMARY):
        assert session_epoch_bump(user=boss, reason="logged out") == 1
    staff_epochs.reset()  # that worker is gone, with its waiting write
    _primary_back()
    during = _logged_in(boss)  # stamped 1, from Redis
    assert session_epoch_bump(user=boss, reason="ended by an administrator") == 2
    _as_another_worker()
    assert not _browses(during)


def test_with_redis_down_another_worker_refuses_within_2s_through_the_database(settings, fresh_circuits):
    settings.CACHES = {"default": dead_redis_cache()}
    boss = _staff()
    browser = _logged_in(boss)
    stolen = _cookie(browser)
    assert _browses(_copy(stolen))
    browser.post(LOGOUT)
    assert _stored(boss) == 1
    assert staff_epochs.to_share() == {boss.pk: 1}  # for Redis once it answers
    _as_another_worker()
    caches["default"].set(f"{CACHE_PREFIX}{boss.pk}", 0, sessions.MEMORY_SECONDS)  # what that worker had read
    assert _browses(_copy(stolen))
    _, waited = poll(lambda: not _browses(_copy(stolen)), timeout=2, interval=0.1)
    assert waited <= 2


def test_with_the_primary_and_redis_down_this_worker_refuses_at_once_and_the_others_when_redis_returns(
    settings, fresh_circuits
):
    redis = RedisProcess()
    redis.start()
    try:
        settings.CACHES = {"default": {**dead_redis_cache(), "LOCATION": redis.url}}
        boss = _staff()
        browser = _logged_in(boss)
        stolen = _cookie(browser)
        _replicated(boss)
        redis.kill()
        with dead(PRIMARY):
            assert _browses(_copy(stolen))
            browser.post(LOGOUT)
            assert caches["default"].uses_memory()
            assert not _browses(_copy(stolen))  # this worker: at once
            assert staff_epochs.pending() == {boss.pk: 1}
            floor = staff_epochs.floor(boss.pk)
            _as_another_worker()
            assert _browses(_copy(stolen))  # another worker cannot know yet (documented)
            staff_epochs.raise_floor(boss.pk, floor)  # back to this worker's view

            redis.start()  # Redis returns (empty): this worker's monitor publishes the bump
            poll(lambda: not caches["default"].uses_memory(), timeout=5, interval=0.1)
            session_epochs_share()
            assert caches["default"].get(f"{CACHE_PREFIX}{boss.pk}") == 1
            _as_another_worker()
            assert not _browses(_copy(stolen))
        _primary_back()
        assert session_epochs_flush() == 1
        assert _stored(boss) == 1
    finally:
        redis.kill()


# ---- what the middleware leaves alone ----------------------------------------------------------------------


def test_api_and_non_staff_requests_are_not_looked_at(auth_client, monkeypatch):
    def refuse(user_id):
        raise AssertionError("the epoch was read")

    staff_browser = Client()
    staff_browser.force_login(UserFactory(is_staff=True))  # a staff session cookie, sent to the API
    customer = Client()
    customer.force_login(UserFactory())
    monkeypatch.setattr(sessions, "session_epoch_current", refuse)
    with CaptureQueriesContext(connection) as queries:
        assert auth_client.get("/api/products/").status_code == 200
    assert not [q for q in queries.captured_queries if "staffsessionepoch" in q["sql"]]
    assert staff_browser.get("/api/products/").status_code == 200
    assert staff_browser.get("/health/live").status_code == 200

    response = customer.get(ADMIN)
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)  # the admin's own refusal
    assert customer.session.get("_auth_user_id")  # not logged out by the middleware


def test_the_epoch_is_read_from_the_database_when_the_cache_misses():
    boss = _staff()
    StaffSessionEpoch.objects.create(user=boss, epoch=7)
    assert session_epoch_current(boss.pk) == 7
    assert caches["default"].get(f"{CACHE_PREFIX}{boss.pk}") == 7
