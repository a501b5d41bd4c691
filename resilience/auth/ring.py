"""This process's copy of the key ring: read from the database at most once a second, never per request.

Verification reads the in-memory ring. The first request after ``RING_REFRESH_SECONDS`` (or the node monitor's
housekeeping, every second) re-reads the ``SigningKey`` rows (from the primary when it is up, else from a
replica), so a rotation or a revocation made by any process reaches every worker within about a second, with or
without Redis. A re-read asks first for the table's fingerprint (an MD5 of every row's text: one raw query) and
reads the rows through the ORM, and builds the ring again, only when it changed: the ORM's read of the rows was
1.4 ms of CPU every second on every worker, a fifth of its background CPU with no traffic, for a ring that changes
a few times a year.
A token naming a ``kid`` this process does not know triggers an early re-read at most once every
``UNKNOWN_KID_REFRESH_SECONDS``, so random kids cannot hammer the database. When the database cannot be
read, the last ring stays in use for up to ``RING_MAX_STALE_SECONDS``; after that (or before any read
succeeded) verification and signing answer 503 ``dependency_unavailable``: a ring that may miss a revocation is
not trusted, and the environment keys alone would ignore the database's revocations.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from rest_framework_simplejwt.settings import api_settings

from core.exceptions import DependencyUnavailableError
from resilience.auth.crypto import private_key_load, public_key_load, secret_decrypt
from resilience.auth.keys import ACTIVE, NEXT, PREVIOUS, KeyRing, StoredKey, retire_delay, ring_build
from resilience.auth.models import SigningKey
from resilience.db import context
from resilience.db.context import primary_reads
from resilience.db.nodes import PRIMARY, registry

logger = logging.getLogger("resilience.auth")

_FIELDS = ("kid", "algorithm", "state", "source", "secret_encrypted", "public_key", "deactivated_at", "activated_at")
# Every row's every column, in a stable order: any change to the table (a row added, changed or deleted) changes it.
_FINGERPRINT_SQL = (
    f"SELECT md5(coalesce(string_agg(k::text, '|' ORDER BY k.id), '')) FROM {SigningKey._meta.db_table} AS k"  # noqa: S608 - the model's own table
)


class RingUnavailableError(DependencyUnavailableError):
    """This process has no ring it can trust: never read, or not re-read for ``RING_MAX_STALE_SECONDS``."""

    message = "Sign-in is unavailable for a moment (the signing keys cannot be read); try again shortly."


class RingCache:
    def __init__(self) -> None:
        self._ring: KeyRing | None = None
        self._checked_at = -math.inf  # monotonic time of the last read attempt
        self._read_ok_at = -math.inf  # ... and of the last successful one
        self._unknown_refresh_at = -math.inf
        self._lock = threading.Lock()
        self._material: dict[tuple[str, str], tuple[Any, Any]] = {}  # (kid, ciphertext) -> decrypted keys
        self._basis: tuple[Any, ...] | None = None  # what the ring was built from: the table's fingerprint, settings
        self.reads = 0  # database reads so far (tests and the benchmark look at it)

    def current(self) -> KeyRing:
        """The ring, re-read first when due; RingUnavailableError rather than a ring that may miss a revocation."""
        ring = self._ring
        now = time.monotonic()
        if ring is None or now - self._checked_at >= settings.BULWARK_JWT["RING_REFRESH_SECONDS"]:
            ring = self.refresh(wait=ring is None)
        if ring is None or time.monotonic() - self._read_ok_at > settings.BULWARK_JWT["RING_MAX_STALE_SECONDS"]:
            raise RingUnavailableError()
        return ring

    def peek(self) -> tuple[KeyRing | None, float]:
        """The ring as it is, without reading the database, and the seconds since it was last read (health)."""
        return self._ring, time.monotonic() - self._read_ok_at

    def keep_fresh(self) -> None:
        """Re-read when due (the monitor's housekeeping thread calls it every second): the ring the health check
        peeks at is as fresh as the one a request would use, whether or not requests came."""
        if time.monotonic() - self._checked_at >= settings.BULWARK_JWT["RING_REFRESH_SECONDS"]:
            self.refresh(wait=False)

    def refresh_for_unknown_kid(self) -> KeyRing:
        """Re-read the ring because a token named an unknown kid: at most once per interval per process."""
        now = time.monotonic()
        with self._lock:
            due = now - self._unknown_refresh_at >= settings.BULWARK_JWT["UNKNOWN_KID_REFRESH_SECONDS"]
            if due:
                self._unknown_refresh_at = now
        if due:
            self.refresh(wait=True)
        return self.current()

    def invalidate(self) -> None:
        """Re-read on next use (this process changed the ring)."""
        self._checked_at = -math.inf

    def reset(self) -> None:
        with self._lock:
            self._ring = None
            self._basis = None
            self._checked_at = self._read_ok_at = self._unknown_refresh_at = -math.inf
            self._material.clear()

    def refresh(self, *, wait: bool) -> KeyRing | None:
        """Read the ring now (None: never read successfully). A thread that finds another one reading does not
        wait for it unless it has no ring at all."""
        if not self._lock.acquire(blocking=wait):
            return self._ring
        try:
            self._checked_at = time.monotonic()
            self.reads += 1
            basis = (self._on_a_node(self._fingerprint), settings.BULWARK_CONFIG, *self._lifetimes())
            if self._ring is None or basis != self._basis:  # (the same config object: compared by identity)
                # The fingerprint kept is one read on the same node as the rows and before them: never newer than
                # the rows (another node, a replica behind, could have answered the rows), so a change it names is
                # never taken as read.
                fingerprint, rows = self._on_a_node(lambda alias: (self._fingerprint(alias), self._rows(alias)))
                self._ring = self._build([self._stored(*row) for row in rows])
                self._basis = (fingerprint, *basis[1:])
            self._read_ok_at = self._checked_at
        except DatabaseError as exc:
            logger.warning(
                "key ring not re-read (the last one stays in use for up to %ss): %s",
                settings.BULWARK_JWT["RING_MAX_STALE_SECONDS"],
                exc,
                extra={"event": "ring_unreadable"},
            )
        finally:
            self._lock.release()
        return self._ring

    @staticmethod
    def _lifetimes() -> tuple[Any, ...]:
        return api_settings.ACCESS_TOKEN_LIFETIME, api_settings.REFRESH_TOKEN_LIFETIME

    @staticmethod
    def _on_a_node(read: Any) -> Any:
        """``read(alias)`` on the primary when it is up (a revocation must not wait for a replica to replay it),
        else on a replica: also when the primary fails this very read (it may not be marked down yet). The ring
        is not the client's data: reading it sets no X-Data-Stale."""
        routing = context.current()
        stale = routing.stale if routing is not None else False
        try:
            # Inside a request or not (a command, a benchmark): outside one, primary_reads alone does nothing.
            with primary_reads() if context.current() else context.routing(context.RoutingState(force_primary=True)):
                # Inside a transaction (a refresh token being rotated) a failed read must not abort it.
                with transaction.atomic(using=PRIMARY) if connections[PRIMARY].in_atomic_block else nullcontext():
                    return read(PRIMARY)
        except DatabaseError as primary_error:
            for alias in registry().readable_replicas():
                try:
                    return read(alias)
                except DatabaseError:
                    continue
            raise primary_error
        finally:
            if routing is not None:
                routing.stale = stale

    @staticmethod
    def _fingerprint(alias: str) -> str:
        with connections[alias].cursor() as cursor:
            cursor.execute(_FINGERPRINT_SQL)
            return cursor.fetchone()[0]

    @staticmethod
    def _rows(alias: str) -> list[tuple[Any, ...]]:
        return list(SigningKey.objects.using(alias).values_list(*_FIELDS))

    def _build(self, stored: list[StoredKey]) -> KeyRing:
        config = settings.BULWARK_CONFIG
        ring = ring_build(
            jwt_secret=config.jwt_secret,
            jwt_secret_prev=config.jwt_secret_prev,
            stored=stored,
            delay=retire_delay(
                api_settings.ACCESS_TOKEN_LIFETIME, api_settings.REFRESH_TOKEN_LIFETIME, config.jwt_leeway
            ),
        )
        if self._ring is not None and ring.version != self._ring.version:
            logger.info("key ring changed", extra={"event": "ring_changed", "kids": [k[0] for k in ring.version]})
        return ring

    def _stored(self, kid, algorithm, state, source, ciphertext, public_pem, deactivated_at, activated_at) -> StoredKey:
        signing = verifying = None
        if ciphertext and state in (NEXT, ACTIVE, PREVIOUS):
            signing, verifying = self._decrypted(kid, algorithm, ciphertext, public_pem)
        return StoredKey(kid, algorithm, state, source, deactivated_at, signing, verifying, public_pem, activated_at)

    def _decrypted(self, kid: str, algorithm: str, ciphertext: str, public_pem: str) -> tuple[Any, Any]:
        if (kid, ciphertext) in self._material:
            return self._material[(kid, ciphertext)]
        try:
            private = private_key_load(algorithm, secret_decrypt(ciphertext))
            verifying = private if algorithm == "HS256" else public_key_load(public_pem)
        except Exception as exc:  # noqa: BLE001 - undecryptable, or not a key we can load: never fail every request
            # Left out of the ring (its tokens get key_retired) rather than failing every request.
            logger.error("signing key %s unusable: %s", kid, exc, extra={"event": "ring_key_unusable", "kid": kid})
            private = verifying = None
        self._material[(kid, ciphertext)] = (private, verifying)
        return private, verifying


ring_cache = RingCache()


def key_ring() -> KeyRing:
    return ring_cache.current()
