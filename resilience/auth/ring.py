"""This process's copy of the key ring: read from the database at most once a second, never per request.

Verification reads the in-memory ring. The first request after ``RING_REFRESH_SECONDS`` re-reads the
``SigningKey`` rows (one small query, from the primary when it is up, else from a replica), so a rotation
or a revocation made by any process reaches every worker within about a second, with or without Redis.
A token naming a ``kid`` this process does not know triggers an early re-read at most once every
``UNKNOWN_KID_REFRESH_SECONDS``, so random kids cannot hammer the database. When the database cannot be
read, the last ring stays in use (and the environment keys alone, before any read succeeded).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from rest_framework_simplejwt.settings import api_settings

from resilience.auth.crypto import KeyDecryptionError, private_key_load, public_key_load, secret_decrypt
from resilience.auth.keys import ACTIVE, NEXT, PREVIOUS, KeyRing, StoredKey, retire_delay, ring_build
from resilience.auth.models import SigningKey
from resilience.db import context
from resilience.db.context import primary_reads

logger = logging.getLogger("resilience.auth")

_FIELDS = ("kid", "algorithm", "state", "source", "secret_encrypted", "public_key", "deactivated_at")


class RingCache:
    def __init__(self) -> None:
        self._ring: KeyRing | None = None
        self._checked_at = -math.inf  # monotonic time of the last read attempt
        self._unknown_refresh_at = -math.inf
        self._lock = threading.Lock()
        self._material: dict[tuple[str, str], tuple[Any, Any]] = {}  # (kid, ciphertext) -> decrypted keys
        self.reads = 0  # database reads so far (tests and the benchmark look at it)

    def current(self) -> KeyRing:
        ring = self._ring
        if ring is None or time.monotonic() - self._checked_at >= settings.BULWARK_JWT["RING_REFRESH_SECONDS"]:
            ring = self.refresh(wait=ring is None)
        assert ring is not None
        return ring

    def refresh_for_unknown_kid(self) -> KeyRing:
        """Re-read the ring because a token named an unknown kid: at most once per interval per process."""
        now = time.monotonic()
        with self._lock:
            due = now - self._unknown_refresh_at >= settings.BULWARK_JWT["UNKNOWN_KID_REFRESH_SECONDS"]
            if due:
                self._unknown_refresh_at = now
        return self.refresh(wait=True) if due else self.current()

    def invalidate(self) -> None:
        """Re-read on next use (this process changed the ring)."""
        self._checked_at = -math.inf

    def reset(self) -> None:
        with self._lock:
            self._ring = None
            self._checked_at = self._unknown_refresh_at = -math.inf
            self._material.clear()

    def refresh(self, *, wait: bool) -> KeyRing:
        """Read the ring now; a thread that finds another one reading uses the current ring unless it has none."""
        if not self._lock.acquire(blocking=wait):
            return self._ring or self._env_only()
        try:
            self._checked_at = time.monotonic()
            self._ring = self._build(self._read())
            return self._ring
        finally:
            self._lock.release()

    def _read(self) -> list[StoredKey] | None:
        self.reads += 1
        routing = context.current()
        stale = routing.stale if routing is not None else False
        try:
            # From the primary when it is up (a revocation must not wait for a replica to replay it), inside a
            # request or not (a management command, a benchmark): outside one, primary_reads alone does nothing.
            with primary_reads() if routing is not None else context.routing(context.RoutingState(force_primary=True)):
                rows = list(SigningKey.objects.values_list(*_FIELDS))
        except DatabaseError as exc:
            if self._ring is not None and self._ring.from_database:
                logger.warning("key ring not re-read, the last one stays in use: %s", exc)
                return None
            logger.error("key ring not readable; environment keys only: %s", exc, extra={"event": "ring_unreadable"})
            return None
        finally:
            if routing is not None:
                routing.stale = stale  # the ring is not the client's data: no X-Data-Stale for reading it
        return [self._stored(*row) for row in rows]

    def _build(self, stored: list[StoredKey] | None) -> KeyRing:
        if stored is None and self._ring is not None and self._ring.from_database:
            return self._ring
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

    def _env_only(self) -> KeyRing:
        return self._build(None)

    def _stored(self, kid, algorithm, state, source, ciphertext, public_pem, deactivated_at) -> StoredKey:
        signing = verifying = None
        if ciphertext and state in (NEXT, ACTIVE, PREVIOUS):
            signing, verifying = self._decrypted(kid, algorithm, ciphertext, public_pem)
        return StoredKey(kid, algorithm, state, source, deactivated_at, signing, verifying, public_pem)

    def _decrypted(self, kid: str, algorithm: str, ciphertext: str, public_pem: str) -> tuple[Any, Any]:
        if (kid, ciphertext) in self._material:
            return self._material[(kid, ciphertext)]
        try:
            private = private_key_load(algorithm, secret_decrypt(ciphertext))
            verifying = private if algorithm == "HS256" else public_key_load(public_pem)
        except (KeyDecryptionError, ValueError) as exc:
            # Left out of the ring (its tokens get key_unknown) rather than failing every request.
            logger.error("signing key %s unusable: %s", kid, exc, extra={"event": "ring_key_unusable", "kid": kid})
            private = verifying = None
        self._material[(kid, ciphertext)] = (private, verifying)
        return private, verifying


ring_cache = RingCache()


def key_ring() -> KeyRing:
    return ring_cache.current()
