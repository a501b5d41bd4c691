"""Read-your-writes tokens: signed and short-lived (a forged or expired one is ignored), carried by the cookie or
the ``X-Read-After`` header, and kept per user in the cache so the user's other clients see the write too.

Which node served a read is asserted from what each connection executed (real primary and streaming replica). A
token for a WAL position far in the future is one no replica has replayed: reads that honour it go to the primary.
"""

from __future__ import annotations

import time
import types
import uuid

import pytest
from django.conf import settings
from django.core import signing
from django.db import connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from resilience.db import context
from resilience.db.consistency import (
    COOKIE,
    HEADER,
    TOKEN_MAX_AGE_SECONDS,
    apply_user_read_after,
    lsn_from_token,
    remember_user_lsn,
    token_for,
    user_lsn,
)
from resilience.db.lsn import int_to_lsn, lsn_to_int
from resilience.db.nodes import PRIMARY
from tests.conftest import client_for
from tests.factories import ProductFactory, UserFactory
from tests.redis_servers import dead_redis_url

REPLICA = "replica_1"
FUTURE = 2**62  # a WAL position no node has reached
ROUTED = [
    pytest.mark.replica_routing,
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


def made_seconds_ago(monkeypatch, seconds: float, lsn: int) -> str:
    """A token signed ``seconds`` ago (only the signing module's clock is moved, while it signs)."""
    with monkeypatch.context() as patched:
        patched.setattr(signing, "time", types.SimpleNamespace(time=lambda: time.time() - seconds))
        return token_for(lsn)


# ---- the token ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lsn", [0, 1, 0x16_B374D848, 2**40 + 7, FUTURE])
def test_a_token_carries_its_wal_position(lsn) -> None:
    assert lsn_from_token(token_for(lsn)) == lsn


@pytest.mark.parametrize("token", [None, "", "garbage", "0/16B374D8"])
def test_no_token_or_an_unsigned_one_carries_nothing(token) -> None:
    assert lsn_from_token(token) is None


def test_a_forged_token_is_refused() -> None:
    genuine = token_for(FUTURE)
    value, _, signature = genuine.rpartition(":")
    tampered_signature = f"{value}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
    other_position = genuine.replace(genuine.partition(":")[0], signing.b64_encode(b'"0/1"').decode(), 1)
    for forged in (tampered_signature, other_position):
        assert lsn_from_token(forged) is None, forged


def test_a_token_signed_with_another_key_or_for_another_purpose_is_refused(settings) -> None:
    assert lsn_from_token(signing.dumps(int_to_lsn(FUTURE))) is None  # the project's key, another salt
    ours = settings.SECRET_KEY
    settings.SECRET_KEY = "another-deployment-" + "x" * 50  # the fixture restores it after the test anyway
    elsewhere = token_for(FUTURE)
    settings.SECRET_KEY = ours
    assert lsn_from_token(elsewhere) is None


def test_a_token_expires(monkeypatch) -> None:
    assert lsn_from_token(made_seconds_ago(monkeypatch, TOKEN_MAX_AGE_SECONDS - 10, 5)) == 5
    assert lsn_from_token(made_seconds_ago(monkeypatch, TOKEN_MAX_AGE_SECONDS + 1, 5)) is None


# ---- the per-user position in the cache ------------------------------------------------------------------------


def test_the_users_position_is_kept_in_the_cache_and_only_raises_the_floor() -> None:
    user_id = f"u-{uuid.uuid4().hex}"  # the cache is the test stack's Redis: a key of this test only
    assert user_lsn(user_id) is None
    remember_user_lsn(user_id, 500)
    assert user_lsn(user_id) == 500
    apply_user_read_after(user_id)  # outside a request: nothing to raise, and no error
    with context.routing(context.RoutingState(min_lsn=100)) as state:
        apply_user_read_after(user_id)
        assert state.min_lsn == 500
    with context.routing(context.RoutingState(min_lsn=900)) as state:
        apply_user_read_after(user_id)
        assert state.min_lsn == 900  # never lowered
    with context.routing(context.RoutingState()) as state:
        apply_user_read_after(f"u-{uuid.uuid4().hex}")
        assert state.min_lsn is None


def test_a_failing_cache_costs_only_the_per_user_position(settings) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",  # raises when Redis is unreachable (no fallback)
            "LOCATION": dead_redis_url(),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
        }
    }
    remember_user_lsn(42, 500)  # no exception: the cookie and the header still carry the position
    assert user_lsn(42) is None
    with context.routing(context.RoutingState(min_lsn=100)) as state:
        apply_user_read_after(42)
        assert state.min_lsn == 100


# ---- through the middleware and the router ---------------------------------------------------------------------


class Reads:
    """The SELECTs on ``table`` each node ran inside the block."""

    def __init__(self, table: str) -> None:
        self.table = table

    def __enter__(self) -> Reads:
        self._captures = {alias: CaptureQueriesContext(connections[alias]) for alias in (PRIMARY, REPLICA)}
        for capture in self._captures.values():
            capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for capture in self._captures.values():
            capture.__exit__(*exc)

    def on(self, alias: str) -> int:
        queries = self._captures[alias].captured_queries
        return sum(1 for q in queries if q["sql"].startswith("SELECT") and self.table in q["sql"])


def product_reads(client: APIClient, **extra: str) -> Reads:
    with Reads("shop_product") as reads:
        assert client.get("/api/products/", **extra).status_code == 200
    return reads


class TestThroughRequests:
    pytestmark = ROUTED

    def test_without_a_token_reads_go_to_the_replica(self) -> None:
        ProductFactory()
        reads = product_reads(APIClient())
        assert reads.on(REPLICA) and not reads.on(PRIMARY)

    def test_the_x_read_after_header_keeps_reads_off_a_replica_that_has_not_replayed_it(self) -> None:
        ProductFactory()
        reads = product_reads(APIClient(), HTTP_X_READ_AFTER=token_for(FUTURE))
        assert reads.on(PRIMARY) and not reads.on(REPLICA)

    def test_the_cookie_does_the_same(self) -> None:
        ProductFactory()
        client = APIClient()
        client.cookies[COOKIE] = token_for(FUTURE)
        reads = product_reads(client)
        assert reads.on(PRIMARY) and not reads.on(REPLICA)

    def test_the_later_of_cookie_and_header_wins(self) -> None:
        ProductFactory()
        client = APIClient()
        client.cookies[COOKIE] = token_for(1)  # long replayed
        reads = product_reads(client, HTTP_X_READ_AFTER=token_for(FUTURE))
        assert reads.on(PRIMARY) and not reads.on(REPLICA)

    def test_a_forged_or_expired_header_is_ignored(self, monkeypatch) -> None:
        ProductFactory()
        genuine = token_for(FUTURE)
        forged = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
        expired = made_seconds_ago(monkeypatch, TOKEN_MAX_AGE_SECONDS + 1, FUTURE)
        for token in (forged, expired):
            reads = product_reads(APIClient(), HTTP_X_READ_AFTER=token)
            assert reads.on(REPLICA) and not reads.on(PRIMARY), token  # it pins nothing to the primary

    def test_a_write_hands_out_its_position_as_header_cookie_and_per_user_entry(self) -> None:
        user, product = UserFactory(), ProductFactory()
        with connections[PRIMARY].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            before = lsn_to_int(cursor.fetchone()[0])
        response = client_for(user).post("/api/cart/items/", {"product_id": product.id, "quantity": 1}, format="json")
        assert response.status_code == 201, response.content
        handed_out = lsn_from_token(response[HEADER])
        assert handed_out is not None and handed_out > before  # at or after the write's commit
        cookie = response.cookies[COOKIE]
        assert lsn_from_token(cookie.value) == handed_out
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and int(cookie["max-age"]) == TOKEN_MAX_AGE_SECONDS
        assert user_lsn(user.pk) == handed_out
        # A read hands out nothing.
        assert HEADER not in APIClient().get("/api/products/")

    def test_the_users_other_clients_honour_the_per_user_position(self) -> None:
        user, other = UserFactory(), UserFactory()
        cart_reads = "shop_cartitem"
        with Reads(cart_reads) as before:
            assert client_for(user).get("/api/cart/").status_code == 200
        assert before.on(REPLICA) and not before.on(PRIMARY)
        remember_user_lsn(user.pk, FUTURE)  # the user just wrote from another client (no cookie, no header here)
        with Reads(cart_reads) as after:
            assert client_for(user).get("/api/cart/").status_code == 200
        assert after.on(PRIMARY) and not after.on(REPLICA)
        with Reads(cart_reads) as someone_else:
            assert client_for(other).get("/api/cart/").status_code == 200
        assert someone_else.on(REPLICA) and not someone_else.on(PRIMARY)  # per user, not for everyone
