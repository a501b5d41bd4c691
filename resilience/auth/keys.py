"""Signing keys from the environment: ``JWT_SECRET`` signs, ``JWT_SECRET_PREV`` still verifies.

Each key has a ``kid`` derived deterministically from its secret (a salted SHA-256 prefix: it names
the key without revealing it), so every process agrees on it with no shared state. Tokens carry the
``kid`` of the key that signed them and verification picks the key by ``kid`` alone, with the
algorithm pinned per key: rotating ``JWT_SECRET`` (old value moved to ``JWT_SECRET_PREV``) keeps
every user logged in. The database-backed key ring builds on this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from resilience.config import Config

KeyState = Literal["active", "previous"]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str
    algorithm: str
    state: KeyState

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r}, state={self.state!r})"


@dataclass(frozen=True)
class KeyRing:
    active: SigningKey
    by_kid: dict[str, SigningKey]

    def verifying_key(self, kid: str) -> SigningKey | None:
        return self.by_kid.get(kid)


def kid_for_secret(secret: str) -> str:
    return "env-" + hashlib.sha256(b"bulwark-jwt-kid:" + secret.encode()).hexdigest()[:16]


def env_key_ring(config: Config) -> KeyRing:
    active = SigningKey(kid_for_secret(config.jwt_secret), config.jwt_secret, "HS256", "active")
    keys = [active]
    if config.jwt_secret_prev and config.jwt_secret_prev != config.jwt_secret:
        keys.append(SigningKey(kid_for_secret(config.jwt_secret_prev), config.jwt_secret_prev, "HS256", "previous"))
    return KeyRing(active=active, by_kid={key.kid: key for key in keys})
