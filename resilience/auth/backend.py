"""A simplejwt token backend that writes ``kid`` and verifies by ``kid`` only.

simplejwt signs with one key and cannot emit a ``kid``; this backend keeps its claims handling
(audience, issuer, leeway) and adds key selection. A token whose ``kid`` is unknown is refused
without trying other keys.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import jwt
from django.conf import settings
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken
from rest_framework_simplejwt.settings import api_settings

from resilience.auth.keys import KeyRing, env_key_ring


class KeyRejectedError(TokenBackendError):
    """The token names no key this service verifies with; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyedTokenBackend(TokenBackend):
    def __init__(self) -> None:
        super().__init__(
            algorithm="HS256",
            audience=api_settings.AUDIENCE,
            issuer=api_settings.ISSUER,
            leeway=api_settings.LEEWAY,
        )

    @cached_property
    def ring(self) -> KeyRing:
        return env_key_ring(settings.BULWARK_CONFIG)

    def encode(self, payload: dict[str, Any]) -> str:
        claims = payload.copy()
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        key = self.ring.active
        return jwt.encode(claims, key.secret, algorithm=key.algorithm, headers={"kid": key.kid})

    def decode(self, token: Any, verify: bool = True) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise KeyRejectedError("malformed") from exc
        kid = header.get("kid")
        if kid is None:
            key = self.ring.active  # tokens issued before kids existed were signed with the active secret
        elif not isinstance(kid, str):
            raise KeyRejectedError("malformed")
        else:
            key = self.ring.verifying_key(kid)
            if key is None:
                raise KeyRejectedError("key_unknown")
        try:
            return jwt.decode(
                token,
                key.secret,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.get_leeway(),
                options={"verify_aud": self.audience is not None, "verify_signature": verify},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenBackendExpiredToken("Token is expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenBackendError("Token is invalid") from exc
