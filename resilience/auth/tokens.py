"""Token issue, rotation and blacklisting on top of simplejwt, with errors as ``token_not_valid`` + reason."""

from __future__ import annotations

import jwt
from django.contrib.auth.models import AbstractBaseUser
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from resilience.errors import TokenNotValidError

MAX_TOKEN_BYTES = 8192

# simplejwt reports problems as messages; these fragments name them (checked in order).
_REASONS = (
    ("blacklisted", "blacklisted"),
    ("wrong type", "wrong_type"),
    ("has expired", "expired"),
    ("no type", "malformed"),
    ("no id", "malformed"),
    ("claim", "malformed"),
)


def _reason(exc: TokenError, raw: str) -> str:
    if isinstance(exc, ExpiredTokenError):
        return "expired"
    text = str(exc.args[0]) if exc.args else ""
    for fragment, reason in _REASONS:
        if fragment in text:
            return reason
    try:
        jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        return "malformed"
    return "invalid"


def token_decode(raw: str | bytes, token_class: type[Token]) -> Token:
    """Verify a token of the given class, or raise TokenNotValidError with its reason."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise TokenNotValidError("malformed") from exc
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenNotValidError("too_large")
    if not raw or raw.count(".") != 2:
        raise TokenNotValidError("malformed")
    try:
        return token_class(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise TokenNotValidError(_reason(exc, raw)) from exc


def tokens_for_user(user: AbstractBaseUser) -> dict[str, str]:
    """A fresh refresh/access pair for this user."""
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def refresh_rotate(raw_refresh: str) -> dict[str, str]:
    """Exchange a refresh token for a new pair; the old refresh token is blacklisted (rotation)."""
    refresh = token_decode(raw_refresh, RefreshToken)
    assert isinstance(refresh, RefreshToken)
    access = str(refresh.access_token)
    refresh.blacklist()
    refresh.set_jti()
    refresh.set_exp()
    refresh.set_iat()
    refresh.outstand()
    return {"access": access, "refresh": str(refresh)}


def refresh_blacklist(raw_refresh: str) -> None:
    """Log out: the refresh token can never be used again."""
    refresh = token_decode(raw_refresh, RefreshToken)
    assert isinstance(refresh, RefreshToken)
    refresh.blacklist()


def access_decode(raw: str | bytes) -> AccessToken:
    token = token_decode(raw, AccessToken)
    assert isinstance(token, AccessToken)
    return token
