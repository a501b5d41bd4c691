"""Rate limits over the API (the DRF throttle, the policy, django-ratelimit's core, the test stack's Redis)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from resilience.cache import FallbackCache
from resilience.controls.state import PRIMARY_ONLY_READS, RATELIMIT_FORCE_MEMORY, controls_replace
from tests.conftest import client_for
from tests.factories import TEST_PASSWORD, UserFactory
from tests.helpers import assert_error
from tests.redis_servers import dead_redis_url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_circuits")]

TOKEN = "/api/auth/token/"
REGISTER = "/api/auth/register/"
REFRESH = "/api/auth/token/refresh/"
ORDERS = "/api/orders/"
PRODUCTS = "/api/products/"
# A day's window: a fixed window restarts at a (per-key) boundary, and a test that straddled one would see a fresh
# count; with a day's window the odds of meeting one during a test are negligible.
DAY = 86400
GENEROUS = (1000, DAY)


def an_ip() -> str:
    """A client address no other test uses (counters live in Redis for the whole run)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
def limits(settings) -> Callable[..., None]:
    """Switch rate limiting on with the given rates (every other scope generous)."""

    def apply(workers: int = 2, trusted_proxies: int = 0, **rates: tuple[int, int] | None) -> None:
        settings.RATELIMIT_ENABLE = True
        settings.RATELIMIT_RATES = {
            scope: rates.get(scope, GENEROUS)
            for scope in ("api", "login", "login_user", "register", "refresh", "checkout")
        }
        settings.RATELIMIT_WORKERS = workers
        settings.RATELIMIT_TRUSTED_PROXY_COUNT = trusted_proxies

    return apply


WRONG_PASSWORD = "wrong password"


def login(client: APIClient, username: str, ip: str, password: str = WRONG_PASSWORD, **extra: str):
    return client.post(TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=ip, **extra)


def assert_limited(response, scope: str, limit: int) -> None:
    error = assert_error(response, 429, "rate_limited")
    assert error["detail"]["scope"] == scope and error["detail"]["limit"] == limit
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= error["detail"]["window_seconds"]
    assert response["RateLimit-Limit"] == str(limit)
    assert response["RateLimit-Remaining"] == "0"
    assert response["RateLimit-Reset"] == str(retry_after)


# ---- scopes ------------------------------------------------------------------------------------------------------


def test_login_is_limited_per_ip_with_headers_on_every_answer(api_client, limits) -> None:
    limits(login=(3, DAY))
    ip = an_ip()
    answers = [login(api_client, f"nobody{n}", ip) for n in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert [a["RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert all(a["RateLimit-Limit"] == "3" and 1 <= int(a["RateLimit-Reset"]) <= DAY for a in answers)
    assert_limited(login(api_client, "nobody", ip), "login", 3)
    assert login(api_client, "nobody", an_ip()).status_code == 401  # another address has its own budget


def test_a_right_password_is_refused_too_once_over_the_limit(api_client, limits) -> None:
    limits(login=(2, DAY))
    user, ip = UserFactory(), an_ip()
    for _ in range(2):
        assert login(api_client, user.username, ip).status_code == 401
    assert_limited(login(api_client, user.username, ip, password=TEST_PASSWORD), "login", 2)


def test_login_is_limited_per_username_across_addresses(api_client, limits) -> None:
    limits(login_user=(3, DAY))
    name = f"target{uuid.uuid4().hex[:8]}"
    spellings = [name, name.upper(), f" {name} "]
    assert [login(api_client, spelling, an_ip()).status_code for spelling in spellings] == [401, 401, 401]
    assert_limited(login(api_client, name, an_ip()), "login_user", 3)
    assert login(api_client, f"other{uuid.uuid4().hex[:8]}", an_ip()).status_code == 401


def test_a_malformed_login_body_is_still_a_parse_error(api_client, limits) -> None:
    limits(login_user=(3, DAY))
    response = api_client.post(TOKEN, "{not json", content_type="application/json", REMOTE_ADDR=an_ip())
    assert_error(response, 400, "parse_error")


def test_register_is_limited_per_ip(api_client, limits) -> None:
    limits(register=(2, DAY))
    ip = an_ip()
    for _ in range(2):
        name = f"new{uuid.uuid4().hex[:8]}"
        body = {"username": name, "email": f"{name}@example.com", "password": TEST_PASSWORD}
        assert api_client.post(REGISTER, body, format="json", REMOTE_ADDR=ip).status_code == 201
    body = {"username": "late", "email": "late@example.com", "password": TEST_PASSWORD}
    assert_limited(api_client.post(REGISTER, body, format="json", REMOTE_ADDR=ip), "register", 2)


def test_refresh_is_limited_per_ip(api_client, limits) -> None:
    limits(refresh=(2, DAY))
    ip = an_ip()
    for _ in range(2):
        assert api_client.post(REFRESH, {"refresh": "x"}, format="json", REMOTE_ADDR=ip).status_code == 401
    assert_limited(api_client.post(REFRESH, {"refresh": "x"}, format="json", REMOTE_ADDR=ip), "refresh", 2)


def test_checkout_is_limited_per_user_and_reads_do_not_count(limits) -> None:
    limits(checkout=(2, DAY))
    alice, bob = client_for(UserFactory()), client_for(UserFactory())
    for _ in range(5):
        assert alice.get(ORDERS, REMOTE_ADDR=an_ip()).status_code == 200
    for _ in range(2):
        assert_error(alice.post(ORDERS, {}, format="json", REMOTE_ADDR=an_ip()), 400, "cart_empty")
    assert_limited(alice.post(ORDERS, {}, format="json", REMOTE_ADDR=an_ip()), "checkout", 2)
    assert_error(bob.post(ORDERS, {}, format="json", REMOTE_ADDR=an_ip()), 400, "cart_empty")


def test_the_global_limit_counts_anonymous_clients_by_ip(api_client, limits) -> None:
    limits(api=(3, DAY))
    ip = an_ip()
    assert [api_client.get(PRODUCTS, REMOTE_ADDR=ip).status_code for _ in range(3)] == [200, 200, 200]
    assert_limited(api_client.get(PRODUCTS, REMOTE_ADDR=ip), "api", 3)
    assert api_client.get(PRODUCTS, REMOTE_ADDR=an_ip()).status_code == 200


def test_the_global_limit_counts_a_user_wherever_they_come_from(limits) -> None:
    limits(api=(3, DAY))
    client = client_for(UserFactory())
    assert [client.get(PRODUCTS, REMOTE_ADDR=an_ip()).status_code for _ in range(3)] == [200, 200, 200]
    assert_limited(client.get(ORDERS, REMOTE_ADDR=an_ip()), "api", 3)


def test_headers_name_the_tightest_limit(api_client, limits) -> None:
    limits(api=(100, DAY), login=(5, DAY), login_user=(50, DAY))
    response = login(api_client, f"u{uuid.uuid4().hex[:8]}", an_ip())
    assert response["RateLimit-Limit"] == "5" and response["RateLimit-Remaining"] == "4"


def test_switched_off_nothing_is_counted(api_client, limits, settings) -> None:
    limits(login=(1, DAY))
    settings.RATELIMIT_ENABLE = False
    ip = an_ip()
    answers = [login(api_client, "nobody", ip) for _ in range(5)]
    assert [a.status_code for a in answers] == [401] * 5
    assert all("RateLimit-Limit" not in a for a in answers)


def test_a_scope_set_to_off_is_not_counted(api_client, limits) -> None:
    limits(login=None, login_user=None, api=None)
    ip = an_ip()
    assert [login(api_client, "nobody", ip).status_code for _ in range(5)] == [401] * 5


# ---- client address ------------------------------------------------------------------------------------------------


def test_without_trusted_proxies_x_forwarded_for_cannot_dodge_the_limit(api_client, limits) -> None:
    limits(login=(2, DAY))
    ip = an_ip()
    spoofed = [login(api_client, "nobody", ip, HTTP_X_FORWARDED_FOR=an_ip()) for _ in range(3)]
    assert [a.status_code for a in spoofed] == [401, 401, 429]


def test_behind_a_trusted_proxy_only_its_entry_counts(api_client, limits) -> None:
    limits(login=(2, DAY), trusted_proxies=1)
    proxy, client = an_ip(), an_ip()
    spoofed = [login(api_client, "nobody", proxy, HTTP_X_FORWARDED_FOR=f"{an_ip()}, {client}") for _ in range(3)]
    assert [a.status_code for a in spoofed] == [401, 401, 429]
    # Other clients behind the same proxy have their own budgets.
    assert login(api_client, "nobody", proxy, HTTP_X_FORWARDED_FOR=an_ip()).status_code == 401


# ---- Redis down, memory mode ---------------------------------------------------------------------------------------


def test_with_redis_dead_limits_hold_from_memory_at_the_worker_share(api_client, limits, settings) -> None:
    """The first count meets the dead Redis in the script itself: the circuit opens and that same request is counted
    in memory."""
    settings.CACHES = {
        "default": {
            "BACKEND": "resilience.cache.FallbackCache",
            "LOCATION": dead_redis_url(),
            "KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
        }
    }
    limits(login=(5, DAY), workers=2)
    ip = an_ip()
    first = login(api_client, "nobody", ip)  # counted in memory already: the failing call fell back
    assert first.status_code == 401
    answers = [first] + [login(api_client, "nobody", ip) for _ in range(3)]
    # ceil(5 / 2) = 3 per worker: this process allows 3; with 2 workers a client gets at most 6, about 5.
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[0]["RateLimit-Limit"] == "3"
    assert_limited(answers[3], "login", 3)


def test_the_operator_switch_counts_in_memory_at_the_worker_share(api_client, limits) -> None:
    limits(login=(10, DAY), workers=4)
    ip = an_ip()
    assert login(api_client, "nobody", ip)["RateLimit-Limit"] == "10"
    controls_replace([(PRIMARY_ONLY_READS, True), (RATELIMIT_FORCE_MEMORY, True)])
    answers = [login(api_client, "nobody", ip) for _ in range(4)]
    # Memory starts a fresh count (Redis's is not carried over) at ceil(10 / 4) = 3.
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[0]["RateLimit-Limit"] == "3"
    controls_replace([(PRIMARY_ONLY_READS, True)])
    back = login(api_client, "nobody", ip)
    assert back.status_code == 401 and back["RateLimit-Limit"] == "10" and back["RateLimit-Remaining"] == "8"


def test_a_store_switch_between_add_and_incr_is_counted_again(api_client, limits, monkeypatch, caplog) -> None:
    """In memory django-ratelimit adds the key, then increments it. If the store switches back to Redis in between,
    the increment meets no key and the library would refuse the request: the policy counts once more instead, in
    the store now in use."""
    limits(api=None, login=(10, DAY), workers=2)  # login is the first scope counted, so the switch hits it
    ip = an_ip()
    assert login(api_client, "nobody", ip).status_code == 401  # counted in Redis: 1
    controls_replace([(PRIMARY_ONLY_READS, True), (RATELIMIT_FORCE_MEMORY, True)])
    real_add = FallbackCache.add
    switched: list[bool] = []

    def add_then_switch(self, *args, **kwargs):
        result = real_add(self, *args, **kwargs)
        if not switched:
            switched.append(True)
            controls_replace([(PRIMARY_ONLY_READS, True)])  # the operator lets Redis serve again
        return result

    monkeypatch.setattr(FallbackCache, "add", add_then_switch)
    response = login(api_client, "nobody", ip)
    assert switched and response.status_code == 401, response.content
    # Counted again, in Redis, at the whole limit (uncounted, the headers would be login_user's 1000).
    assert response["RateLimit-Limit"] == "10" and response["RateLimit-Remaining"] == "8"
    assert not [r for r in caplog.records if getattr(r, "event", None) == "ratelimit_uncounted"]
