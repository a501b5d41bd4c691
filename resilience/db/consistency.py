"""Read-your-writes tokens: the primary's WAL position after a client's write, carried by the client.

The token is signed (a client cannot forge one that pins every read to the primary) and short-lived.
It travels as a cookie and as the ``X-Read-After`` header (for clients without cookies), and is also
kept per user in the cache, so a logged-in user's other clients see the write too.
"""

from __future__ import annotations

import logging

from django.core import signing
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.db import DatabaseError, connections

from resilience.db import context
from resilience.db.lsn import int_to_lsn, lsn_to_int
from resilience.db.nodes import PRIMARY

logger = logging.getLogger("resilience.db")

COOKIE = "bulwark_read_after"
HEADER = "X-Read-After"
TOKEN_MAX_AGE_SECONDS = 300
_SALT = "resilience.db.read-after"


def token_for(lsn: int) -> str:
    return signing.dumps(int_to_lsn(lsn), salt=_SALT, compress=False)


def lsn_from_token(token: str | None) -> int | None:
    if not token:
        return None
    try:
        return lsn_to_int(signing.loads(token, salt=_SALT, max_age=TOKEN_MAX_AGE_SECONDS))
    except (signing.BadSignature, TypeError, ValueError):
        return None  # a stale or forged token only costs the client its read-your-writes


def _user_key(user_id: object) -> str:
    return f"bulwark:read-after:user:{user_id}"


def user_lsn(user_id: object) -> int | None:
    try:  # read on every authenticated request: the cache's direct get where it has one (FallbackCache)
        store = caches[DEFAULT_CACHE_ALIAS]
        return getattr(store, "get_direct", store.get)(_user_key(user_id))
    except Exception as exc:  # noqa: BLE001 - any cache backend failure: fall back to the client's token
        logger.info("read-after cache unavailable: %s", exc)
        return None


def remember_user_lsn(user_id: object, lsn: int) -> None:
    try:
        cache.set(_user_key(user_id), lsn, TOKEN_MAX_AGE_SECONDS)
    except Exception as exc:  # noqa: BLE001 - best effort: the cookie and header still carry the token
        logger.info("read-after cache unavailable: %s", exc)


def primary_position() -> int | None:
    """The primary's WAL insert position now (after this request's commits), or None when unknown."""
    try:
        with connections[PRIMARY].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            return lsn_to_int(cursor.fetchone()[0])
    except DatabaseError as exc:
        logger.info("could not read the primary's WAL position: %s", exc)
        return None


def apply_user_read_after(user_id: object) -> None:
    """Raise this request's freshness floor to the user's last write (called once the user is known)."""
    state = context.current()
    if state is None:  # no routing here (a command, or settings without the routing middleware): nothing to raise
        return
    lsn = user_lsn(user_id)
    if lsn is not None and (state.min_lsn is None or lsn > state.min_lsn):
        state.min_lsn = lsn
