"""A refresh token cannot be used twice, also while the primary is down (real dead nodes, the stack's Redis).

The primary is "killed" by pointing its alias at a port where nothing listens (tests.helpers.dead); the replica
streams the committed rows, so the user lookup works from it.
"""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from resilience.auth import replay
from resilience.auth.replay import KEY_PREFIX, DeferredBlacklist, UsedRefreshTokens, used_refresh_tokens
from resilience.auth.tokens import tokens_for_user
from resilience.db.nodes import PRIMARY, registry
from tests.factories import UserFactory
from tests.helpers import assert_error, dead
from tests.redis_servers import dead_redis_cache

REPLICA = "replica_1"
REFRESH = "/api/auth/token/refresh/"
pytestmark = [
    pytest.mark.replica_routing,
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


@pytest.fixture(autouse=True)
def _fresh_memory():
    used_refresh_tokens.reset()
    yield
    used_refresh_tokens.reset()
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def _replicated(user) -> None:
    deadline = time.monotonic() + 10
    while not type(user).objects.using(REPLICA).filter(pk=user.pk).exists():
        assert time.monotonic() < deadline, "the replica did not replay the user"
        time.sleep(0.05)


def _refresh(client, token: str):
    return client.post(REFRESH, {"refresh": token}, content_type="application/json")


def _jti(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def _forget_everywhere(token: str) -> None:
    """As if another worker (own memory) met a Redis that lost the key: only the database can still tell."""
    used_refresh_tokens.forget_seen()
    cache.delete(f"{KEY_PREFIX}{_jti(token)}")


def test_a_second_use_while_the_primary_is_down_is_refused_before_and_after_it_returns(client):
    user = UserFactory()
    token = tokens_for_user(user)["refresh"]
    _replicated(user)
    with dead(PRIMARY):
        first = _refresh(client, token)
        assert first.status_code == 200, first.content
        assert_error(_refresh(client, token), 401, "token_not_valid")
        _forget_everywhere(token)
        cache.add(f"{KEY_PREFIX}{_jti(token)}", 1, 60)  # ... but the shared cache remembers
        assert _refresh(client, token).json()["error"]["detail"]["reason"] == "blacklisted"
    assert used_refresh_tokens.pending() == 1
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)  # back
    replay.deferred_flush()  # the monitor's task once the primary answers
    assert used_refresh_tokens.pending() == 0
    assert BlacklistedToken.objects.using(PRIMARY).filter(token__jti=_jti(token)).exists()
    _forget_everywhere(token)  # the database alone refuses it now
    again = _refresh(client, token)
    assert_error(again, 401, "token_not_valid")
    assert again.json()["error"]["detail"]["reason"] == "blacklisted"
    assert _refresh(client, first.json()["refresh"]).status_code == 200  # the new one works


def test_a_token_used_before_the_outage_is_refused_during_it(client):
    user = UserFactory()
    token = tokens_for_user(user)["refresh"]
    assert _refresh(client, token).status_code == 200  # blacklisted in the database, claimed in the cache
    _replicated(user)
    used_refresh_tokens.forget_seen()  # another worker: only the shared cache (and the replica) can tell
    with dead(PRIMARY):
        refused = _refresh(client, token)
    assert refused.status_code == 401, refused.content
    assert refused.json()["error"]["detail"]["reason"] == "blacklisted"


def test_the_replica_blacklist_refuses_a_token_the_cache_forgot(client):
    user = UserFactory()
    token = tokens_for_user(user)["refresh"]
    assert _refresh(client, token).status_code == 200
    deadline = time.monotonic() + 10
    while not BlacklistedToken.objects.using(REPLICA).filter(token__jti=_jti(token)).exists():
        assert time.monotonic() < deadline, "the replica did not replay the blacklist row"
        time.sleep(0.05)
    _forget_everywhere(token)  # Redis lost it (restarted), and this is another worker
    with dead(PRIMARY):
        refused = _refresh(client, token)
    assert refused.json()["error"]["detail"]["reason"] == "blacklisted"
    assert used_refresh_tokens.pending() == 0  # nothing deferred for a refused token


def test_with_redis_down_too_this_worker_still_refuses_and_the_window_is_counted(client, settings):
    settings.CACHES = {"default": dead_redis_cache()}
    user = UserFactory()
    token = tokens_for_user(user)["refresh"]
    _replicated(user)
    unguarded = replay.UNGUARDED._value.get()
    with dead(PRIMARY):
        assert _refresh(client, token).status_code == 200
        assert _refresh(client, token).json()["error"]["detail"]["reason"] == "blacklisted"  # this worker's memory
    assert replay.UNGUARDED._value.get() == unguarded + 1


def test_a_full_deferred_buffer_drops_the_oldest_and_counts_it(monkeypatch):
    monkeypatch.setattr(replay, "DEFERRED_MAX", 2)
    tokens = UsedRefreshTokens()
    dropped = replay.DEFERRED_DROPPED._value.get()
    user = UserFactory()
    later = time.time() + 3600
    for jti in ("a", "b", "c"):
        tokens.defer(DeferredBlacklist(jti=f"{jti}-{uuid.uuid4().hex}", token="t", user_id=user.pk, expires_at=later))
    assert tokens.pending() == 2
    assert replay.DEFERRED_DROPPED._value.get() == dropped + 1
    assert tokens.flush() == 2
    assert BlacklistedToken.objects.using(PRIMARY).filter(token__user=user).count() == 2


def test_a_flush_with_the_primary_still_down_keeps_the_queue():
    user = UserFactory()
    tokens = UsedRefreshTokens()
    entry = DeferredBlacklist(jti=uuid.uuid4().hex, token="t", user_id=user.pk, expires_at=time.time() + 3600)
    tokens.defer(entry)
    with dead(PRIMARY):
        assert tokens.flush() == 0
    assert tokens.pending() == 1
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)
    assert tokens.flush() == 1
    assert BlacklistedToken.objects.using(PRIMARY).filter(token__jti=entry.jti).exists()
