"""A simplejwt token backend that signs with the ring's active key and verifies by ``kid`` only.

simplejwt signs with one key and cannot emit a ``kid`` (its issues #608, #202, #253, #491); this backend
keeps simplejwt's token classes and claims and replaces key handling:

- the token's shape is checked before any decoding: at most ``MAX_TOKEN_BYTES``, three base64url parts,
  a JSON header holding only ``alg``, ``kid`` and ``typ`` (so ``jku``/``x5u``/``jwk``/``x5c``/``crit``
  are refused: no key is ever fetched or taken from a token);
- the key is looked up by ``kid`` alone, never by trying each key; its state decides (retired, revoked);
- the algorithm is the key's own (``algorithms=[key.algorithm]``), whatever the header says;
- ``exp``, ``iat``, ``jti``, ``token_type``, ``user_id``, ``iss`` and ``aud`` are required; during the
  migration window (``JWT_KIDLESS_UNTIL``) tokens of the environment keys issued before this version may lack
  ``kid`` (verified against ``JWT_SECRET`` only), ``iss`` and ``aud``.

Every refusal raises :class:`KeyRejectedError` with a one-word reason that becomes the 401's ``reason``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken
from rest_framework_simplejwt.settings import api_settings

from core.exceptions import DependencyUnavailableError
from resilience.auth.keys import KID_PATTERN, NEXT, RETIRED, REVOKED, RingKey
from resilience.auth.models import KeySource
from resilience.auth.ring import ring_cache

MAX_TOKEN_BYTES = 8192
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
MAX_HEADER_CHARS = 512  # base64url of {"alg", "kid", "typ"} is about 110 characters
ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = ["exp", "iat", "jti", "token_type", "user_id"]


class KeyRejectedError(TokenBackendError):
    """The token was refused before or at verification; ``reason`` says how in one word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unverified_header(token: str) -> dict[str, Any]:
    """The header of a token of the right shape, or KeyRejectedError: decoded by hand, strictly."""
    if len(token) > MAX_TOKEN_BYTES:
        raise KeyRejectedError("too_large")
    if not TOKEN_PATTERN.fullmatch(token):
        raise KeyRejectedError("malformed")
    encoded = token.partition(".")[0]
    if len(encoded) > MAX_HEADER_CHARS:
        raise KeyRejectedError("malformed")
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        raise KeyRejectedError("malformed") from None
    if not isinstance(header, dict) or not ALLOWED_HEADER.issuperset(header):
        raise KeyRejectedError("malformed")
    if not isinstance(header.get("alg"), str) or header.get("typ", "JWT") != "JWT":
        raise KeyRejectedError("malformed")
    return header


def _migration_window_open() -> bool:
    until = settings.BULWARK_JWT["KIDLESS_UNTIL"]
    return until is not None and timezone.now() < until


class KeyedTokenBackend(TokenBackend):
    def __init__(self) -> None:
        super().__init__(
            algorithm="HS256",  # unused: each key pins its own
            audience=api_settings.AUDIENCE,
            issuer=api_settings.ISSUER,
            leeway=api_settings.LEEWAY,
        )

    def encode(self, payload: dict[str, Any]) -> str:
        key = ring_cache.current().signer
        if key is None or key.signing is None:
            raise DependencyUnavailableError("No signing key is available; the operators have been alerted.")
        claims = {**payload, "iss": self.issuer, "aud": self.audience}
        return jwt.encode(claims, key.signing, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"})

    def decode(self, token: Any, verify: bool = True) -> dict[str, Any]:
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise KeyRejectedError("malformed") from None
        if not isinstance(token, str):
            raise KeyRejectedError("malformed")
        header = unverified_header(token)
        key = self._keyed(header["kid"]) if "kid" in header else self._kidless()
        if header["alg"] != key.algorithm:
            raise KeyRejectedError("invalid")
        # Tokens issued before this version carry no iss/aud (and maybe no kid): accepted from environment
        # keys during the migration window only; a claim that is present must still match.
        legacy = key.source == KeySource.ENVIRONMENT.value and _migration_window_open()
        try:
            claims = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.algorithm],
                audience=None if legacy else self.audience,
                issuer=None if legacy else self.issuer,
                leeway=self.get_leeway(),
                options={
                    "require": REQUIRED_CLAIMS if legacy else [*REQUIRED_CLAIMS, "iss", "aud"],
                    "verify_signature": verify,
                    "verify_aud": not legacy,
                    "verify_iss": not legacy,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenBackendExpiredToken("Token is expired") from exc
        except jwt.MissingRequiredClaimError:
            raise KeyRejectedError("malformed") from None
        except jwt.InvalidSignatureError:  # a DecodeError subclass: caught before it
            raise KeyRejectedError("invalid") from None
        except (jwt.DecodeError, jwt.InvalidKeyError):
            raise KeyRejectedError("malformed") from None
        except jwt.InvalidTokenError:
            raise KeyRejectedError("invalid") from None
        if legacy and (
            claims.get("iss", self.issuer) != self.issuer or claims.get("aud", self.audience) != self.audience
        ):
            raise KeyRejectedError("invalid")
        return claims

    def _keyed(self, kid: Any) -> RingKey:
        if not isinstance(kid, str):
            raise KeyRejectedError("malformed")
        if not KID_PATTERN.fullmatch(kid):
            raise KeyRejectedError("key_unknown")  # never looked up: no kid of this shape was ever issued
        key = ring_cache.current().lookup(kid) or ring_cache.refresh_for_unknown_kid().lookup(kid)
        if key is None:
            raise KeyRejectedError("key_unknown")
        status = key.status(timezone.now())
        if status == REVOKED:
            raise KeyRejectedError("key_revoked")
        if status == RETIRED:
            raise KeyRejectedError("key_retired")
        if key.verifying is None:
            # Its material is gone (an environment secret no longer configured, or undecryptable).
            raise KeyRejectedError("key_retired" if status != NEXT else "key_unknown")
        return key

    def _kidless(self) -> RingKey:
        legacy = ring_cache.current().legacy
        if not _migration_window_open() or legacy is None:
            raise KeyRejectedError("kid_missing")
        status = legacy.status(timezone.now())
        if status in (REVOKED, RETIRED):
            raise KeyRejectedError("key_revoked" if status == REVOKED else "key_retired")
        return legacy
