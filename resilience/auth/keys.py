"""The key ring as one process sees it: environment keys combined with the database's.

How the two sources combine (README "Signing keys"):

- ``JWT_SECRET`` and ``JWT_SECRET_PREV`` are HS256 keys whose ``kid`` is derived from the secret (a salted
  SHA-256 prefix: it names the key without revealing it), so every process agrees on it with no shared
  state. While the database holds no ACTIVE key, ``JWT_SECRET`` signs and ``JWT_SECRET_PREV`` verifies:
  the seed's way, for operators who keep secrets in a vault and rotate by restarting.
- Once the database holds an ACTIVE key (``rotate_jwt_key`` or the admin), that key signs. The rotation
  records the environment key it replaced as a PREVIOUS row (no secret stored), so it retires on the same
  clock as any other key; an environment key with no row keeps verifying for as long as it is configured.
- A database row for an environment ``kid`` (retired, revoked) overrides it: ``rotate_jwt_key --revoke``
  refuses ``JWT_SECRET_PREV``'s tokens without a restart.
- Tokens without a ``kid`` verify against ``JWT_SECRET`` only, and only before ``JWT_KIDLESS_UNTIL``.

A PREVIOUS key counts as RETIRED once ``max(access, refresh lifetime) + leeway`` (+ 2 s for the other workers
to stop signing with it) has passed since it stopped signing: derived from timestamps at each verification,
so there is no scheduler to forget.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from resilience.auth.models import KeySource, KeyState

KID_PATTERN = re.compile(r"(?:env|db)-[0-9a-f]{16}")  # the only shapes this service ever issues

NEXT, ACTIVE, PREVIOUS, RETIRED, REVOKED = (
    KeyState.NEXT.value,
    KeyState.ACTIVE.value,
    KeyState.PREVIOUS.value,
    KeyState.RETIRED.value,
    KeyState.REVOKED.value,
)


@dataclass(frozen=True, repr=False)
class RingKey:
    kid: str
    algorithm: str
    state: str
    source: str
    signing: Any = None  # HS secret bytes or an Ed25519 private key; None when this process lacks it
    verifying: Any = None  # HS secret bytes or an Ed25519 public key
    public_pem: str = ""
    retire_after: datetime | None = None  # a PREVIOUS key counts as RETIRED from this instant on
    activated_at: datetime | None = None  # when it began signing (None: an environment key, its age unknown)

    def status(self, now: datetime) -> str:
        """The effective state now: a PREVIOUS key past its retirement instant is RETIRED."""
        if self.state == PREVIOUS and self.retire_after is not None and now >= self.retire_after:
            return RETIRED
        return self.state

    def __repr__(self) -> str:  # never show key material
        return f"RingKey(kid={self.kid!r}, algorithm={self.algorithm!r}, state={self.state!r}, source={self.source!r})"


@dataclass(frozen=True)
class KeyRing:
    signer: RingKey | None
    by_kid: dict[str, RingKey]
    legacy: RingKey | None = None  # the key tokens without a kid were signed with (JWT_SECRET)
    from_database: bool = False  # False: built without the database's rows (only for tests and tools)
    version: tuple[Any, ...] = field(default=(), compare=False)

    def lookup(self, kid: str) -> RingKey | None:
        return self.by_kid.get(kid)

    def published(self, now: datetime) -> list[RingKey]:
        """Asymmetric keys a verifier may meet: NEXT (about to sign), ACTIVE, and PREVIOUS not yet retired."""
        return [key for key in self.by_kid.values() if key.public_pem and key.status(now) in (NEXT, ACTIVE, PREVIOUS)]


@dataclass(frozen=True)
class StoredKey:
    """A database row with its material already decrypted (resilience.auth.ring loads these)."""

    kid: str
    algorithm: str
    state: str
    source: str
    deactivated_at: datetime | None
    signing: Any = None
    verifying: Any = None
    public_pem: str = ""
    activated_at: datetime | None = None

    def __repr__(self) -> str:
        return f"StoredKey(kid={self.kid!r}, state={self.state!r}, source={self.source!r})"


def kid_for_secret(secret: str) -> str:
    return "env-" + hashlib.sha256(b"bulwark-jwt-kid:" + secret.encode()).hexdigest()[:16]


PROPAGATION_MARGIN = timedelta(seconds=2)  # other workers may sign with a key for ~1 s after it stepped down


def retire_delay(access_lifetime: timedelta, refresh_lifetime: timedelta, leeway: timedelta) -> timedelta:
    """How long a key keeps verifying after it stopped signing: every token it signed has expired by then."""
    return max(access_lifetime, refresh_lifetime) + leeway + PROPAGATION_MARGIN


def ring_build(
    *,
    jwt_secret: str,
    jwt_secret_prev: str | None,
    stored: Iterable[StoredKey] | None,
    delay: timedelta,
) -> KeyRing:
    """Combine the environment keys with the database's (``stored`` None: the database could not be read)."""
    env_keys: dict[str, RingKey] = {}
    legacy = None
    for secret, state in ((jwt_secret, ACTIVE), (jwt_secret_prev, PREVIOUS)):
        if not secret:
            continue
        kid = kid_for_secret(secret)
        if kid in env_keys:
            continue
        material = secret.encode()
        env_keys[kid] = RingKey(kid, "HS256", state, KeySource.ENVIRONMENT.value, material, material)
        if state == ACTIVE:
            legacy = env_keys[kid]

    by_kid = dict(env_keys)
    db_signer = None
    for row in stored or ():
        retire_after = row.deactivated_at + delay if row.state == PREVIOUS and row.deactivated_at else None
        if row.source == KeySource.ENVIRONMENT.value:
            env_key = env_keys.get(row.kid)
            by_kid[row.kid] = RingKey(
                row.kid,
                "HS256",
                row.state,
                row.source,
                None,  # an environment key the database took over from never signs again
                env_key.verifying if env_key else None,
                retire_after=retire_after,
            )
            continue
        key = RingKey(
            row.kid,
            row.algorithm,
            row.state,
            row.source,
            row.signing if row.state in (NEXT, ACTIVE) else None,
            row.verifying if row.state in (NEXT, ACTIVE, PREVIOUS) else None,
            row.public_pem,
            retire_after,
            row.activated_at,
        )
        by_kid[row.kid] = key
        if row.state == ACTIVE:
            db_signer = key

    signer = db_signer
    if signer is None:
        env_active = by_kid.get(kid_for_secret(jwt_secret)) if jwt_secret else None
        if env_active is not None and env_active.state == ACTIVE:
            signer = env_active
    if legacy is not None:
        legacy = by_kid[legacy.kid]
    version = tuple(sorted((key.kid, key.state, key.retire_after) for key in by_kid.values()))
    return KeyRing(signer, by_kid, legacy, stored is not None, version)
