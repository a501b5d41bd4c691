"""Refresh-token replay protection that keeps working while the primary is down.

Rotation blacklists a used refresh token in the database (simplejwt's blacklist), which needs the primary.
Every refresh also records the used token's ``jti`` here, so a second use is refused without the primary:

- **Shared cache** (Redis): an atomic ``add`` per ``jti`` (kept until the token would have expired): of two
  uses on any workers, one wins. Recorded on every refresh, so a token used before an outage is refused
  during it too.
- **This process's memory**: every ``jti`` this worker saw, so a second use on the same worker is refused even
  when Redis is down as well.
- **Deferred blacklist rows**: a refresh during a primary outage queues its token (a bounded buffer,
  :data:`DEFERRED_MAX`); the node monitor writes the rows once the primary is back (:func:`deferred_flush`), so
  the database blacklist ends up complete. A full buffer drops the oldest entry, counted and logged.

The window that remains: with Redis and the primary both down, a second use on *another* worker cannot be
seen. Each refresh accepted in that state is counted (``bulwark_refresh_unguarded_total``) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.cache import cache, caches
from django.db import DatabaseError, connections
from prometheus_client import Counter
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from resilience.cache import FallbackCache

logger = logging.getLogger("resilience.auth")

KEY_PREFIX = "auth:refresh-used:"
MEMORY_MAX = 100_000  # jtis this process remembers (the oldest are forgotten first)
DEFERRED_MAX = 10_000  # blacklist rows waiting for the primary, per process

DEFERRED_DROPPED = Counter(
    "bulwark_refresh_blacklist_dropped_total",
    "Used refresh tokens whose blacklist row was dropped because the deferred buffer was full",
)
UNGUARDED = Counter(
    "bulwark_refresh_unguarded_total",
    "Refreshes accepted with the primary and Redis both down (a second use on another worker cannot be seen)",
)


@dataclass(frozen=True)
class DeferredBlacklist:
    jti: str
    token: str  # the raw refresh token: its OutstandingToken row may not exist yet
    user_id: int
    expires_at: float  # unix time


class UsedRefreshTokens:
    """The ``jti``s of used refresh tokens, in the shared cache and in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()  # jti -> expiry (unix time)
        self._deferred: deque[DeferredBlacklist] = deque()

    def claim(self, jti: str, expires_at: float) -> bool:
        """Record a use of this token; False when it was used before (here, or anywhere the cache can tell)."""
        now = time.time()
        with self._lock:
            seen_here = self._seen.get(jti, 0.0) > now
            self._remember(jti, expires_at, now)
        if seen_here:
            return False
        timeout = max(1, int(expires_at - now) + 1)
        return bool(cache.add(f"{KEY_PREFIX}{jti}", 1, timeout))

    def cache_is_shared(self) -> bool:
        """Whether a claim is seen by the other workers now (Redis answers), or only by this one."""
        store = caches["default"]
        return isinstance(store, FallbackCache) and not store.uses_memory()

    def defer(self, entry: DeferredBlacklist) -> None:
        """Queue a blacklist row for when the primary is back; the oldest is dropped (and counted) when full."""
        with self._lock:
            if len(self._deferred) >= DEFERRED_MAX:
                dropped = self._deferred.popleft()
                DEFERRED_DROPPED.inc()
                logger.error(
                    "deferred refresh blacklist full (%d): dropped the row of token %s (the cache still refuses it "
                    "until it expires)",
                    DEFERRED_MAX,
                    dropped.jti,
                    extra={"event": "refresh_blacklist_dropped", "jti": dropped.jti},
                )
            self._deferred.append(entry)

    def pending(self) -> int:
        with self._lock:
            return len(self._deferred)

    def flush(self) -> int:
        """Write the deferred blacklist rows (primary needed); returns how many were written. Entries that could
        not be written stay queued, in order; expired tokens are dropped (nothing can use them any more)."""
        written = 0
        while True:
            with self._lock:
                if not self._deferred:
                    return written
                entry = self._deferred[0]
            if entry.expires_at > time.time():
                try:
                    _blacklist_row(entry)
                except DatabaseError as exc:
                    logger.info("deferred refresh blacklist not written yet: %s", exc)
                    return written
                written += 1
            with self._lock:
                if self._deferred and self._deferred[0] is entry:
                    self._deferred.popleft()

    def forget_seen(self) -> None:
        """Forget the jtis this process saw (tests: another worker's view)."""
        with self._lock:
            self._seen.clear()

    def reset(self) -> None:
        """Forget the jtis and drop the queue (tests)."""
        with self._lock:
            self._seen.clear()
            self._deferred.clear()

    def _remember(self, jti: str, expires_at: float, now: float) -> None:
        self._seen[jti] = expires_at
        self._seen.move_to_end(jti)
        while self._seen and (len(self._seen) > MEMORY_MAX or next(iter(self._seen.values())) <= now):
            self._seen.popitem(last=False)


def _blacklist_row(entry: DeferredBlacklist) -> None:
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=entry.jti,
        defaults={
            "user_id": entry.user_id,
            "token": entry.token,
            "expires_at": datetime.fromtimestamp(entry.expires_at, tz=UTC),
        },
    )
    BlacklistedToken.objects.get_or_create(token=outstanding)


def blacklisted_on_a_replica(jti: str) -> bool:
    """Whether the database blacklist, as a replica has it, already holds this token (False when none can tell)."""
    try:  # routed as any read: a replica, or the primary when no replica can serve
        return BlacklistedToken.objects.filter(token__jti=jti).exists()
    except DatabaseError as exc:
        logger.info("blacklist not readable from a replica: %s", exc)
        return False


def deferred_flush() -> None:
    """The node monitor's task while the primary is reachable: write the deferred blacklist rows."""
    if used_refresh_tokens.pending():
        written = used_refresh_tokens.flush()
        if written:
            logger.info(
                "wrote %d deferred refresh blacklist row(s)", written, extra={"event": "refresh_blacklist_flushed"}
            )
        connections.close_all()  # this runs in the monitor's thread: no request end closes its connections


used_refresh_tokens = UsedRefreshTokens()
