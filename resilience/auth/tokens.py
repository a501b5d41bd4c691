"""Token issue, rotation and blacklisting on top of simplejwt, with errors as ``token_not_valid`` + reason."""

from __future__ import annotations

import logging

import jwt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, transaction
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from resilience.auth.backend import MAX_TOKEN_BYTES, KeyedTokenBackend, KeyRejectedError
from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.models import UserTokenState
from resilience.auth.replay import UNGUARDED, DeferredBlacklist, blacklisted_on_a_replica, used_refresh_tokens
from resilience.db.bookkeeping import best_effort
from resilience.db.consistency import apply_user_read_after
from resilience.db.context import primary_reads, read_from_replica

logger = logging.getLogger(__name__)

GENERATION_CLAIM = "gen"  # the user's token generation at issue; "log out everywhere" raises it
_BACKEND = KeyedTokenBackend()


class KeyedAccessToken(AccessToken):
    """An access token signed with the active key and verified by its ``kid``."""

    _token_backend = _BACKEND


class KeyedRefreshToken(RefreshToken):
    """A refresh token signed with the active key and verified by its ``kid``; its access tokens too."""

    _token_backend = _BACKEND
    access_token_class = KeyedAccessToken

    @classmethod
    def for_user(cls, user: AbstractBaseUser) -> KeyedRefreshToken:
        """A new token for ``user``; its outstanding-token row is bookkeeping, written when the primary can."""
        token = Token.for_user.__func__(cls, user)  # type: ignore[attr-defined]  # skips simplejwt's hard write
        with primary_reads():  # right after "log out everywhere", a lagging replica would hand out dead tokens
            generation = UserTokenState.objects.filter(user_id=user.pk).values_list("generation", flat=True).first()
        token[GENERATION_CLAIM] = generation or 0
        best_effort("outstanding refresh token", token.outstand)
        return token


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
    if isinstance(exc.__cause__, KeyRejectedError):
        return exc.__cause__.reason
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


def token_user(token: Token) -> AbstractBaseUser:
    """The active user a verified token names, or TokenNotValidError (``user_unknown``, ``user_inactive``)."""
    user_id = token.get(api_settings.USER_ID_CLAIM)
    if user_id is None or not isinstance(user_id, int | str):
        raise TokenNotValidError("malformed")
    apply_user_read_after(user_id)  # the user's own recent writes (a password change, say) must be visible
    user_model = get_user_model()
    lookup = {api_settings.USER_ID_FIELD: user_id}
    try:
        users = user_model.objects.select_related("token_state").filter(**lookup)  # "abc" as an int id: ValueError
        user = users.first()
        if user is None and read_from_replica():
            with primary_reads():  # an account created a moment ago may not have reached the replica yet
                user = users.first()
    except (ValueError, TypeError) as exc:
        raise TokenNotValidError("user_unknown") from exc
    if user is None:
        raise TokenNotValidError("user_unknown")
    if not user.is_active:
        raise TokenNotValidError("user_inactive")
    generation = token.get(GENERATION_CLAIM, 0)
    if not isinstance(generation, int) or generation < user_token_generation(user):
        raise TokenNotValidError("logged_out")  # the user logged out everywhere after this token was issued
    return user


def user_token_generation(user: AbstractBaseUser) -> int:
    """The user's current token generation (0 until the first "log out everywhere")."""
    try:
        return user.token_state.generation  # type: ignore[attr-defined]
    except UserTokenState.DoesNotExist:
        return 0


def tokens_for_user(user: AbstractBaseUser) -> dict[str, str]:
    """A fresh refresh/access pair for this user."""
    refresh = KeyedRefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def refresh_rotate(raw_refresh: str) -> dict[str, str]:
    """Exchange a refresh token for a new pair; the old refresh token can never be used again (rotation).

    Every use is first claimed in the shared cache and this process's memory (:mod:`resilience.auth.replay`),
    so a second use is refused at once, also while the primary is down. Then the old token's outstanding row
    is locked while it is checked and blacklisted, so two concurrent refreshes with one token cannot both
    succeed. With the primary down the refresh still succeeds (users stay logged in): the blacklist row is
    queued and written when the primary is back.
    """
    refresh = token_decode(raw_refresh, KeyedRefreshToken)
    assert isinstance(refresh, KeyedRefreshToken)
    token_user(refresh)  # a deleted or deactivated account gets no new tokens
    jti = str(refresh[api_settings.JTI_CLAIM])
    if not used_refresh_tokens.claim(jti, float(refresh["exp"])):
        raise TokenNotValidError("blacklisted")
    try:
        return _rotate_blacklisting(refresh)
    except TokenNotValidError:
        raise
    except DatabaseError as exc:
        return _rotate_without_primary(refresh, raw_refresh, jti, exc)


def _rotate_without_primary(refresh: KeyedRefreshToken, raw: str, jti: str, exc: DatabaseError) -> dict[str, str]:
    """The primary cannot blacklist now: refuse a token a replica knows is blacklisted, else queue its row."""
    if blacklisted_on_a_replica(jti):
        raise TokenNotValidError("blacklisted")
    entry = DeferredBlacklist(
        jti=jti,
        token=raw.decode() if isinstance(raw, bytes) else raw,
        user_id=int(refresh[api_settings.USER_ID_CLAIM]),
        expires_at=float(refresh["exp"]),
    )
    used_refresh_tokens.defer(entry)
    if used_refresh_tokens.cache_is_shared():
        logger.warning(
            "refresh with the primary unavailable: blacklisting deferred, reuse refused through the cache (%s)",
            exc,
            extra={"event": "refresh_blacklist_deferred"},
        )
    else:
        UNGUARDED.inc()
        logger.warning(
            "refresh with the primary and Redis unavailable: a reuse on another worker cannot be refused (%s)",
            exc,
            extra={"event": "refresh_replay_unguarded"},
        )
    return _reissue(refresh)


@transaction.atomic
def _rotate_blacklisting(refresh: KeyedRefreshToken) -> dict[str, str]:
    refresh.outstand()  # make sure its row exists, then hold it
    locked = OutstandingToken.objects.select_for_update().get(jti=refresh[api_settings.JTI_CLAIM])
    if BlacklistedToken.objects.filter(token=locked).exists():
        raise TokenNotValidError("blacklisted")
    BlacklistedToken.objects.create(token=locked)
    return _reissue(refresh)


def _reissue(refresh: KeyedRefreshToken) -> dict[str, str]:
    access = str(refresh.access_token)
    refresh.set_jti()
    refresh.set_exp()
    refresh.set_iat()
    best_effort("outstanding refresh token", refresh.outstand)
    return {"access": access, "refresh": str(refresh)}


def refresh_blacklist(raw_refresh: str) -> None:
    """Log out: the refresh token can never be used again."""
    refresh = token_decode(raw_refresh, KeyedRefreshToken)
    assert isinstance(refresh, RefreshToken)
    refresh.blacklist()


def access_decode(raw: str | bytes) -> AccessToken:
    token = token_decode(raw, KeyedAccessToken)
    assert isinstance(token, AccessToken)
    return token
