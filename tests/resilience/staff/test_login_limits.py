"""The admin's log-in and password-change forms limited like the API's log-in: per client IP and per username,
every POST counted (a right password refused while a limit holds), an HTML 429 page with Retry-After, counted in
the test stack's real Redis, and in memory at the worker share while Redis is down."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from resilience.staff.login import staff_limit_check, wait_text
from tests.factories import TEST_PASSWORD, UserFactory
from tests.redis_servers import dead_redis_cache

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_circuits")]

LOGIN = "/admin/login/?next=/admin/"
PASSWORD_CHANGE = "/admin/password_change/"
WRONG_PASSWORD = "not the password at all"
DAY = 86400  # a window no test straddles (a fixed window restarts at a per-key boundary)
GENEROUS = (1000, DAY)
SCOPES = ("admin_login", "admin_login_user", "otp")


def an_ip() -> str:
    """A client address no other test uses (counters live in Redis for the whole run)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def a_name(prefix: str = "staff") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def limits(settings) -> Callable[..., None]:
    """Switch rate limiting on with the given rates (every other admin scope generous)."""

    def apply(workers: int = 2, trusted_proxies: int = 0, **rates: tuple[int, int] | None) -> None:
        settings.RATELIMIT_ENABLE = True
        settings.RATELIMIT_RATES = {scope: rates.get(scope, GENEROUS) for scope in SCOPES}
        settings.RATELIMIT_WORKERS = workers
        settings.RATELIMIT_TRUSTED_PROXY_COUNT = trusted_proxies

    return apply


@pytest.fixture
def staff():
    return UserFactory(username=a_name(), is_staff=True)


def login(client, username: str, ip: str, password: str = WRONG_PASSWORD, **extra: str):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip, **extra)


def assert_form_again(response) -> None:
    """A failed log-in: 200, Django's login form with its error (not logged in)."""
    assert response.status_code == 200, response.status_code
    assert 'name="password"' in response.content.decode()


def assert_logged_in(response) -> None:
    assert response.status_code == 302 and response["Location"] == "/admin/", (
        response.status_code,
        response.get("Location"),
    )


def assert_limited_page(response, *, limit: int, window: int, attempts: str = "log-in attempts") -> int:
    """The admin-styled 429 page: Retry-After and RateLimit-*, how long to wait, no form, not cached."""
    assert response.status_code == 429, response.status_code
    assert response["Content-Type"].startswith("text/html"), response["Content-Type"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= window
    assert response["RateLimit-Limit"] == str(limit) and response["RateLimit-Remaining"] == "0"
    assert response["RateLimit-Reset"] == str(retry_after)
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert f"Too many {attempts}" in page and f"Wait {wait_text(retry_after)} and try again" in page
    assert "Bulwark administration" in page  # the admin's own frame (admin/base_site.html)
    assert 'name="password"' not in page and 'name="old_password"' not in page  # no form to try again on
    return retry_after


def not_logged_in(client) -> bool:
    answer = client.get("/admin/")
    return answer.status_code == 302 and "/admin/login/" in answer["Location"]


# ---- the log-in form -------------------------------------------------------------------------------------------


def test_the_attempt_past_the_ip_limit_is_a_429_page_and_another_address_is_not_limited(client, limits) -> None:
    limits(admin_login=(3, DAY))
    ip = an_ip()
    for _ in range(3):
        assert_form_again(login(client, a_name("nobody"), ip))
    assert_limited_page(login(client, a_name("nobody"), ip), limit=3, window=DAY)
    assert_form_again(login(client, a_name("nobody"), an_ip()))


def test_a_right_password_is_refused_while_the_limit_holds(client, limits, staff) -> None:
    limits(admin_login=(2, DAY))
    ip = an_ip()
    for _ in range(2):
        assert_form_again(login(client, staff.username, ip))
    assert_limited_page(login(client, staff.username, ip, password=TEST_PASSWORD), limit=2, window=DAY)
    assert not_logged_in(client)
    assert_logged_in(login(client, staff.username, an_ip(), password=TEST_PASSWORD))  # elsewhere: fine


def test_the_username_is_limited_whatever_the_address_and_spelling(client, limits, staff) -> None:
    limits(admin_login_user=(3, DAY))
    spellings = [staff.username, staff.username.upper(), f" {staff.username} "]
    for spelling in spellings:
        assert_form_again(login(client, spelling, an_ip()))
    assert_limited_page(login(client, staff.username, an_ip(), password=TEST_PASSWORD), limit=3, window=DAY)
    assert not_logged_in(client)
    assert_form_again(login(client, a_name("other"), an_ip()))  # another account has its own budget


def test_the_page_is_the_same_whether_or_not_the_account_exists(client, limits, staff) -> None:
    limits(admin_login_user=(1, DAY))
    pages = []
    for username in (staff.username, a_name("ghost")):
        assert_form_again(login(client, username, an_ip()))
        limited = login(client, username, an_ip())
        assert_limited_page(limited, limit=1, window=DAY)
        # Only the time to wait differs (each key has its own window).
        pages.append(re.sub(r"\d+( (seconds?|minutes|hours))?", "N", limited.content.decode()))
    assert pages[0] == pages[1]
    assert staff.username not in pages[0]


def test_behind_a_trusted_proxy_its_entry_is_the_client(client, limits) -> None:
    limits(admin_login=(2, DAY), trusted_proxies=1)
    proxy, user_ip = an_ip(), an_ip()
    answers = [
        login(client, a_name("nobody"), proxy, HTTP_X_FORWARDED_FOR=f"{an_ip()}, {user_ip}").status_code
        for _ in range(3)
    ]
    assert answers == [200, 200, 429]
    assert login(client, a_name("nobody"), proxy, HTTP_X_FORWARDED_FOR=an_ip()).status_code == 200


def test_accepted_again_once_the_window_is_over(client, limits, staff) -> None:
    limits(admin_login_user=(2, 2))
    limited = None
    for _ in range(8):  # a 2 s window may end mid-way: go on until it refuses
        answer = login(client, staff.username, an_ip())
        if answer.status_code == 429:
            limited = answer
            break
        assert_form_again(answer)
    assert limited is not None, "never limited"
    retry_after = assert_limited_page(limited, limit=2, window=2)
    time.sleep(retry_after + 0.05)  # Retry-After is never early: the next window has begun by then
    assert_logged_in(login(client, staff.username, an_ip(), password=TEST_PASSWORD))


def test_a_get_of_the_form_is_never_counted(client, limits) -> None:
    limits(admin_login=(1, DAY))
    ip = an_ip()
    for _ in range(3):
        assert client.get(LOGIN, REMOTE_ADDR=ip).status_code == 200
    assert_form_again(login(client, a_name("nobody"), ip))
    assert login(client, a_name("nobody"), ip).status_code == 429


def test_switched_off_or_scope_off_nothing_is_limited(client, limits, settings) -> None:
    limits(admin_login=None, admin_login_user=None)
    ip, name = an_ip(), a_name("nobody")
    assert [login(client, name, ip).status_code for _ in range(4)] == [200] * 4
    limits(admin_login=(1, DAY), admin_login_user=(1, DAY))
    settings.RATELIMIT_ENABLE = False
    assert [login(client, name, ip).status_code for _ in range(4)] == [200] * 4


def test_with_redis_dead_the_limit_holds_from_memory_at_the_worker_share(client, limits, settings, staff) -> None:
    settings.CACHES = {"default": dead_redis_cache()}
    limits(admin_login=(5, DAY), workers=2)
    ip = an_ip()
    answers = [login(client, staff.username, ip) for _ in range(3)]  # the first met Redis down: counted in memory
    for answer in answers:
        assert_form_again(answer)
    # ceil(5 / 2) = 3 in this worker; with 2 workers a client gets between 3 and 6, about 5.
    assert_limited_page(login(client, staff.username, ip, password=TEST_PASSWORD), limit=3, window=DAY)
    assert not_logged_in(client)


# ---- the password-change form ----------------------------------------------------------------------------------


def change_password(client, ip: str, old: str = WRONG_PASSWORD, **extra_fields: str):
    new = "a new password that is long enough"
    data = {"old_password": old, "new_password1": new, "new_password2": new, **extra_fields}
    return client.post(PASSWORD_CHANGE, data, REMOTE_ADDR=ip)


def test_the_password_change_form_is_limited_per_user_and_shares_the_accounts_budget(client, limits, staff) -> None:
    limits(admin_login_user=(2, DAY))
    client.force_login(staff)
    for _ in range(2):
        answer = change_password(client, an_ip())
        assert answer.status_code == 200 and "old_password" in answer.content.decode()  # wrong old password
    # Counted by the signed-in user: a username field added to the form names nobody else.
    limited = change_password(client, an_ip(), old=TEST_PASSWORD, username=a_name("other"))
    assert_limited_page(limited, limit=2, window=DAY, attempts="password-change attempts")
    assert 'id="user-tools"' in limited.content.decode()  # signed in: the admin's normal frame
    staff.refresh_from_db()
    assert staff.check_password(TEST_PASSWORD)  # not changed
    # The log-in form of the same account is over the same budget; another staff user is not.
    assert login(client, staff.username, an_ip(), password=TEST_PASSWORD).status_code == 429
    other = UserFactory(username=a_name(), is_staff=True)
    client.force_login(other)
    assert change_password(client, an_ip()).status_code == 200


def test_the_password_change_form_is_limited_per_ip(client, limits, staff) -> None:
    limits(admin_login=(1, DAY))
    client.force_login(staff)
    ip = an_ip()
    assert change_password(client, ip).status_code == 200
    assert change_password(client, ip).status_code == 429
    assert change_password(client, an_ip()).status_code == 200


# ---- for the other scopes (the second factor) -----------------------------------------------------------------


def test_staff_limit_check_counts_by_the_key_given(limits) -> None:
    limits(otp=(2, DAY))
    key = f"user:{uuid.uuid4().int % 10**9}"

    def attempt(counted_key: str):
        request = RequestFactory().post("/admin/login/", {"username": "someone"}, REMOTE_ADDR=an_ip())
        request.user = AnonymousUser()  # not signed in yet: the scope's own key ("user") has nothing to count
        return staff_limit_check(request, "otp", counted_key)

    assert attempt(key) is None and attempt(key) is None
    refused = attempt(key)
    assert_limited_page(refused, limit=2, window=DAY, attempts="second-factor attempts")
    assert attempt(f"{key}0") is None  # another user
    request = RequestFactory().post("/admin/login/", REMOTE_ADDR=an_ip())
    request.user = AnonymousUser()
    assert staff_limit_check(request, "otp") is None  # no key: not counted


def test_wait_text_reads_like_a_person_wrote_it() -> None:
    assert [wait_text(s) for s in (1, 45, 119, 120, 121, 7199, 7200, 86400)] == [
        "1 second",
        "45 seconds",
        "119 seconds",
        "2 minutes",
        "3 minutes",
        "120 minutes",
        "2 hours",
        "24 hours",
    ]
