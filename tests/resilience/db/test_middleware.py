"""Requests meeting a failed node, with real connection failures (a node address where nothing listens)."""

from __future__ import annotations

import pytest
from django.conf import settings

from resilience.db.nodes import PRIMARY, registry
from tests.factories import ProductFactory
from tests.helpers import dead

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.replica_routing,
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


def test_a_read_that_meets_a_dead_replica_is_rerun_on_the_primary(client) -> None:
    ProductFactory(name="Visible")
    with dead(REPLICA):
        response = client.get("/api/products/")
        assert response.status_code == 200
        assert registry().state(REPLICA).reachable is False
        again = client.get("/api/products/")  # the breaker is open: straight to the primary
        assert again.status_code == 200
    assert [item["name"] for item in response.json()["results"]] == ["Visible"]
    assert "X-Data-Stale" not in response


def test_a_write_with_the_primary_dead_is_read_only_mode_and_reads_continue(client) -> None:
    ProductFactory()
    body = {"username": "newcomer", "email": "n@example.com", "password": "correct horse battery staple"}
    with dead(PRIMARY):
        first = client.post("/api/auth/register/", body, content_type="application/json")
        second = client.post("/api/auth/register/", body, content_type="application/json")
        read = client.get("/api/products/")
    for response in (first, second):
        assert response.status_code == 503, response.content
        assert response.json()["error"]["code"] == "read_only_mode"
        assert response["Retry-After"].isdigit()
    assert read.status_code == 200
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_a_write_request_whose_read_meets_a_dead_replica_is_rerun(client, db) -> None:
    from resilience.auth.tokens import tokens_for_user
    from shop.catalog.models import Product
    from tests.factories import UserFactory

    product = ProductFactory(stock=5)
    user = UserFactory()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {tokens_for_user(user)['access']}"}
    with dead(REPLICA):  # the user lookup while authenticating reads from the replica first
        response = client.post(
            "/api/cart/items/", {"product_id": product.id, "quantity": 2}, content_type="application/json", **auth
        )
    assert response.status_code == 201, response.content
    assert response.json()["items"][0]["quantity"] == 2
    assert Product.objects.get(pk=product.pk).stock == 5  # adding to a cart reserves nothing


def test_a_first_ring_read_that_meets_the_dead_primary_comes_from_the_replica(client) -> None:
    import time

    import jwt

    from resilience.auth.models import SigningKey
    from resilience.auth.ring import ring_cache
    from resilience.auth.services import key_rotate
    from resilience.auth.tokens import tokens_for_user
    from tests.factories import UserFactory

    user = UserFactory()
    key = key_rotate()  # tokens are signed by a database key: the environment keys alone could not verify them
    ring_cache.reset()
    access = tokens_for_user(user)["access"]
    assert jwt.get_unverified_header(access)["kid"] == key.kid
    deadline = time.monotonic() + 10  # the replica streams: it has both rows within moments
    while not (
        SigningKey.objects.using(REPLICA).filter(kid=key.kid).exists()
        and type(user).objects.using(REPLICA).filter(pk=user.pk).exists()
    ):
        assert time.monotonic() < deadline, "the replica did not replay the key and the user"
        time.sleep(0.05)
    ring_cache.reset()  # a worker that has not read the ring yet
    with dead(PRIMARY):  # and the primary dies before the monitor noticed
        response = client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == user.id
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_a_request_run_again_is_counted_once_by_the_rate_limiter(client, settings) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "api": (1000, 86400)}
    address = {"REMOTE_ADDR": "10.200.7.9", "HTTP_X_REQUEST_ID": "rerun-count"}
    ProductFactory()
    before = client.get("/api/products/", **address)
    with dead(REPLICA):
        rerun = client.get("/api/products/", **address)  # met the dead replica, ran again on the primary
        assert registry().state(REPLICA).reachable is False
    after = client.get("/api/products/", **address)
    remaining = [int(response["RateLimit-Remaining"]) for response in (before, rerun, after)]
    assert [response.status_code for response in (before, rerun, after)] == [200, 200, 200]
    assert remaining == [remaining[0], remaining[0] - 1, remaining[0] - 2]
