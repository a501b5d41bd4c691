"""How environment keys and database keys combine into one ring, and how a process keeps its copy fresh."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import StringIO

import jwt
import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.keys import ACTIVE, NEXT, PREVIOUS, RETIRED, REVOKED, StoredKey, kid_for_secret, ring_build
from resilience.auth.models import SigningKey
from resilience.auth.ring import RingUnavailableError, ring_cache
from resilience.auth.services import key_revoke, key_rotate
from resilience.auth.tokens import KeyedAccessToken, access_decode, refresh_rotate, tokens_for_user
from tests.helpers import dead

SECRET_A = "A" * 16 + "-first-secret-0123456789"
SECRET_B = "B" * 16 + "-second-secret-012345678"
DELAY = timedelta(days=7, seconds=30)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def stored(kid: str, state: str, *, source: str = "database", deactivated_at=None, material=b"x" * 48) -> StoredKey:
    return StoredKey(kid, "HS256", state, source, deactivated_at, material, material)


def test_environment_alone_signs_with_jwt_secret_and_verifies_prev() -> None:
    ring = ring_build(jwt_secret=SECRET_B, jwt_secret_prev=SECRET_A, stored=[], delay=DELAY)
    assert ring.signer.kid == kid_for_secret(SECRET_B)
    assert ring.lookup(kid_for_secret(SECRET_A)).status(NOW) == PREVIOUS
    assert ring.legacy.kid == kid_for_secret(SECRET_B)  # kid-less tokens: JWT_SECRET only
    assert ring.lookup(kid_for_secret(SECRET_A)).retire_after is None  # the environment decides when it goes


def test_a_database_active_key_signs_and_the_env_key_it_replaced_retires_on_time() -> None:
    env_kid = kid_for_secret(SECRET_A)
    rotated_at = NOW - timedelta(days=1)
    ring = ring_build(
        jwt_secret=SECRET_A,
        jwt_secret_prev=None,
        stored=[
            stored("db-00000000000000aa", ACTIVE),
            stored(env_kid, PREVIOUS, source="environment", deactivated_at=rotated_at, material=None),
        ],
        delay=DELAY,
    )
    assert ring.signer.kid == "db-00000000000000aa"
    env_key = ring.lookup(env_kid)
    assert env_key.signing is None and env_key.verifying == SECRET_A.encode()  # verifies, never signs again
    assert env_key.status(NOW) == PREVIOUS
    assert env_key.status(rotated_at + DELAY) == RETIRED  # derived from timestamps, no scheduler


def test_a_database_row_overrides_an_environment_key_state() -> None:
    prev_kid = kid_for_secret(SECRET_A)
    ring = ring_build(
        jwt_secret=SECRET_B,
        jwt_secret_prev=SECRET_A,
        stored=[stored(prev_kid, REVOKED, source="environment", material=None)],
        delay=DELAY,
    )
    assert ring.lookup(prev_kid).status(NOW) == REVOKED
    assert ring.signer.kid == kid_for_secret(SECRET_B)


def test_only_next_active_previous_keys_hold_material() -> None:
    ring = ring_build(
        jwt_secret=SECRET_A,
        jwt_secret_prev=None,
        stored=[
            stored("db-0000000000000001", NEXT),
            stored("db-0000000000000002", ACTIVE),
            stored("db-0000000000000003", PREVIOUS, deactivated_at=NOW),
            stored("db-0000000000000004", RETIRED),
            stored("db-0000000000000005", REVOKED),
        ],
        delay=DELAY,
    )
    held = {kid: key.verifying is not None for kid, key in ring.by_kid.items() if kid.startswith("db-")}
    assert held == {
        "db-0000000000000001": True,
        "db-0000000000000002": True,
        "db-0000000000000003": True,
        "db-0000000000000004": False,
        "db-0000000000000005": False,
    }
    assert ring.lookup("db-0000000000000001").signing is not None  # NEXT: ready to sign once promoted
    assert ring.lookup("db-0000000000000003").signing is None  # PREVIOUS never signs


def test_an_unreadable_database_leaves_the_environment_keys() -> None:
    ring = ring_build(jwt_secret=SECRET_A, jwt_secret_prev=None, stored=None, delay=DELAY)
    assert not ring.from_database and ring.signer.kid == kid_for_secret(SECRET_A)


def test_no_key_material_in_any_repr() -> None:
    ring = ring_build(
        jwt_secret=SECRET_A, jwt_secret_prev=SECRET_B, stored=[stored("db-00000000000000aa", ACTIVE)], delay=DELAY
    )
    text = repr(ring) + repr(list(ring.by_kid.values())) + repr(stored("db-00000000000000aa", ACTIVE))
    assert SECRET_A not in text and SECRET_B not in text and "xxxxxxxx" not in text


@pytest.mark.django_db
def test_the_ring_is_read_at_most_once_per_interval(user, settings) -> None:
    access = tokens_for_user(user)["access"]
    ring_cache.reset()
    settings.BULWARK_JWT = {**settings.BULWARK_JWT, "RING_REFRESH_SECONDS": 3600}  # the fixture restores it
    ring_cache.current()
    reads = ring_cache.reads
    with CaptureQueriesContext(connection) as queries:
        for _ in range(200):
            access_decode(access)
    assert ring_cache.reads == reads
    assert not [q for q in queries.captured_queries if "signingkey" in q["sql"]]


@pytest.mark.django_db
def test_a_revocation_elsewhere_is_seen_at_the_next_refresh(user, monkeypatch) -> None:
    key_rotate()
    ring_cache.reset()
    access = tokens_for_user(user)["access"]
    kid = jwt.get_unverified_header(access)["kid"]
    assert kid.startswith("db-")
    access_decode(access)
    # Another process revokes it: this process's ring is not told, it re-reads on schedule.
    SigningKey.objects.filter(kid=kid).update(state=REVOKED)
    access_decode(access)  # within the interval the cached ring still accepts it
    monkeypatch.setattr(ring_cache, "_checked_at", ring_cache._checked_at - 1.0)  # one interval later
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(access)
    assert refused.value.reason == "key_revoked"


@pytest.mark.django_db
def test_a_re_read_of_an_unchanged_table_asks_only_for_its_fingerprint_and_any_change_rebuilds(user) -> None:
    """The ORM's read of the rows and the ring's build happen only when the table's fingerprint changed: a row
    changed by hand (no timestamp touched, no signal sent) or deleted counts as a change."""
    key_rotate()
    ring_cache.reset()
    access = tokens_for_user(user)["access"]
    kid = jwt.get_unverified_header(access)["kid"]
    built = ring_cache.current()

    def re_read() -> list[str]:
        reread_due()
        with CaptureQueriesContext(connection) as queries:
            ring_cache.current()
        return [q["sql"] for q in queries.captured_queries if SigningKey._meta.db_table in q["sql"]]

    unchanged = re_read()
    assert len(unchanged) == 1 and "md5" in unchanged[0], unchanged
    assert ring_cache.current() is built  # not built again
    with connection.cursor() as cursor:  # as an operator's SQL would: updated_at stays as it was
        cursor.execute("UPDATE resilience_signingkey SET state = %s WHERE kid = %s", [REVOKED, kid])
    assert len(re_read()) == 3  # the fingerprint, then the fingerprint and the rows on one node
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(access)
    assert refused.value.reason == "key_revoked"
    rebuilt = ring_cache.current()
    SigningKey.objects.filter(kid=kid).delete()
    assert len(re_read()) == 3 and ring_cache.current() is not rebuilt


@pytest.mark.django_db
def test_the_fingerprint_kept_is_the_one_read_with_the_rows(user, monkeypatch) -> None:
    """The check may see a newer table than the node that then answers the rows (a replica behind): the ring keeps
    the fingerprint read on that node with the rows, so the next check rebuilds again instead of taking the change
    as read."""
    key_rotate()
    ring_cache.reset()
    ring_cache.current()
    answers = iter(["newer", "older", "newer", "newer", "newer"])  # check, with the rows, check, with the rows, check
    monkeypatch.setattr(type(ring_cache), "_fingerprint", staticmethod(lambda alias: next(answers)))
    rows_read = []
    real_rows = type(ring_cache)._rows
    monkeypatch.setattr(
        type(ring_cache), "_rows", staticmethod(lambda alias: rows_read.append(alias) or real_rows(alias))
    )
    reread_due()
    ring_cache.current()
    assert len(rows_read) == 1 and ring_cache._basis[0] == "older"
    reread_due()
    ring_cache.current()  # "newer" is not what the ring was built from: the rows are read again
    assert len(rows_read) == 2 and ring_cache._basis[0] == "newer"
    reread_due()
    ring_cache.current()
    assert len(rows_read) == 2  # now it is


@pytest.mark.django_db
def test_a_change_in_this_process_is_obeyed_at_once(user, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        key_rotate()
    access = tokens_for_user(user)["access"]
    kid = jwt.get_unverified_header(access)["kid"]
    ring_cache.current()  # fresh ring, next re-read due in a second
    with django_capture_on_commit_callbacks(execute=True):
        key_revoke(kid=kid)
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(access)
    assert refused.value.reason == "key_revoked"


# Real failures: every database node unreachable (a port where nothing listens), in transactional tests so
# that closing the connections does not break the test's own transaction.
ALL_NODES = pytest.mark.django_db(transaction=True, databases="__all__")


def every_node_dead():
    return dead(*settings.DATABASES)


def every_replica_dead():
    return dead(*(alias for alias in settings.DATABASES if alias != "default"))


def reread_due() -> None:
    ring_cache._checked_at -= settings.BULWARK_JWT["RING_REFRESH_SECONDS"] + 1  # as if a second had passed


@ALL_NODES
def test_an_unreadable_ring_keeps_the_last_one(user) -> None:
    key_rotate()
    ring_cache.reset()
    access = tokens_for_user(user)["access"]
    assert jwt.get_unverified_header(access)["kid"].startswith("db-")
    reads = ring_cache.reads
    with every_node_dead():
        reread_due()
        access_decode(access)  # the re-read fails; the last ring still verifies the database key
        assert ring_cache.reads == reads + 1
        reread_due()
        signed = str(KeyedAccessToken.for_user(user))  # and still signs (a login also needs the user: not here)
        assert jwt.get_unverified_header(signed)["kid"] == jwt.get_unverified_header(access)["kid"]


@ALL_NODES
def test_a_ring_never_read_is_a_503_not_the_environment_keys_alone(user, api_client) -> None:
    access = tokens_for_user(user)["access"]  # signed by JWT_SECRET: the environment alone could verify it
    ring_cache.reset()
    with every_node_dead():
        with pytest.raises(RingUnavailableError):
            access_decode(access)
        response = api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {access}")
        jwks = api_client.get("/.well-known/jwks.json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "dependency_unavailable"
    assert response["Retry-After"]
    assert jwks.status_code == 503 and jwks.json()["error"]["code"] == "dependency_unavailable"


@ALL_NODES
def test_a_ring_not_reread_for_too_long_is_no_longer_trusted(user) -> None:
    access = tokens_for_user(user)["access"]
    access_decode(access)
    with every_node_dead():
        reread_due()
        access_decode(access)  # a failed re-read: the last ring stays in use for a while
        ring_cache._read_ok_at -= settings.BULWARK_JWT["RING_MAX_STALE_SECONDS"] + 1  # ... this long ago
        reread_due()
        with pytest.raises(RingUnavailableError):
            access_decode(access)  # it may miss a revocation by now


@contextmanager
def signing_keys_locked() -> Iterator[None]:
    """Another session holds ACCESS EXCLUSIVE on the signing-key table: every read of it waits for the lock."""
    holder = psycopg.connect(**connection.get_connection_params())  # its own session, not Django's
    try:
        holder.execute(f'LOCK TABLE "{SigningKey._meta.db_table}" IN ACCESS EXCLUSIVE MODE')  # held: no commit
        yield
    finally:
        holder.rollback()
        holder.close()


@ALL_NODES
def test_a_failed_ring_read_inside_a_refresh_does_not_skip_the_blacklisting(user, caplog) -> None:
    # The ring falls due while the refresh holds the token's row (one interval passes just then), and its read
    # fails for real inside that transaction: the primary gives up waiting for a lock (LockNotAvailable; the
    # connection stays up, so the failed statement would abort the refresh's transaction without the ring's
    # savepoint) and the replica is unreachable. The blacklisting must still commit.
    tokens = tokens_for_user(user)
    ring_cache.current()  # fresh: decoding the refresh token does not re-read it
    ring_reads: list[bool] = []  # per read of the signing-key table: was it inside a transaction?

    def clock_runs_out_inside_the_refresh(execute, sql, params, many, ctx):
        if SigningKey._meta.db_table in sql:
            ring_reads.append(connection.in_atomic_block)
        result = execute(sql, params, many, ctx)
        if "FOR UPDATE" in sql and OutstandingToken._meta.db_table in sql:  # the old token's row is locked
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")  # for the rest of this transaction only
            reread_due()
        return result

    with signing_keys_locked(), every_replica_dead(), connection.execute_wrapper(clock_runs_out_inside_the_refresh):
        reads = ring_cache.reads
        new_pair = refresh_rotate(tokens["refresh"])  # the ring read fails; the last ring signs
    assert ring_cache.reads == reads + 1 and ring_reads == [True], ring_reads
    unreadable = [r for r in caplog.records if getattr(r, "event", None) == "ring_unreadable"]
    assert unreadable and "lock timeout" in unreadable[0].getMessage(), caplog.text  # a real failed query
    assert access_decode(new_pair["access"])["user_id"] == str(user.pk)
    old_jti = jwt.decode(tokens["refresh"], options={"verify_signature": False})["jti"]
    assert BlacklistedToken.objects.filter(token__jti=old_jti).exists()  # committed, not rolled back
    with pytest.raises(TokenNotValidError) as replayed:
        refresh_rotate(tokens["refresh"])
    assert replayed.value.reason == "blacklisted"


@ALL_NODES
def test_listing_an_unreadable_ring_is_a_clear_command_error() -> None:
    with every_node_dead(), pytest.raises(CommandError, match="The key ring cannot be read"):
        call_command("rotate_jwt_key", "--list", stdout=StringIO())
