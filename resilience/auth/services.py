"""Changing the key ring (stage, rotate, retire, revoke, re-encrypt) and logging a user out everywhere.

Each change runs in one transaction with the rows it touches locked, writes one audit entry per key whose
state changes, is logged (never with key material), and is obeyed by this process at once and by every
other within ``RING_REFRESH_SECONDS`` (resilience.auth.ring).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from resilience.auth.crypto import (
    KeyDecryptionError,
    NewKeyMaterial,
    material_generate,
    new_kid,
    secret_encrypt,
    secret_reencrypt,
)
from resilience.auth.keys import ACTIVE, NEXT, PREVIOUS, RETIRED, REVOKED, kid_for_secret, retire_delay
from resilience.auth.models import KeyAlgorithm, KeyAuditEntry, KeySource, SigningKey, UserTokenState
from resilience.auth.ring import ring_cache
from resilience.db.consistency import primary_position, remember_user_lsn
from resilience.events import event_record

logger = logging.getLogger("resilience.auth")

MIN_IMPORTED_SECRET_BYTES = 32


class KeyRingError(Exception):
    """A key-ring change refused; the message says why and what to do instead."""


def key_retire_delay() -> timedelta:
    return retire_delay(
        api_settings.ACCESS_TOKEN_LIFETIME, api_settings.REFRESH_TOKEN_LIFETIME, settings.BULWARK_CONFIG.jwt_leeway
    )


def _env_kids() -> tuple[str, str | None]:
    config = settings.BULWARK_CONFIG
    return kid_for_secret(config.jwt_secret), (
        kid_for_secret(config.jwt_secret_prev) if config.jwt_secret_prev else None
    )


def _audit(key: SigningKey, action: str, previous_state: str, actor: AbstractBaseUser | None, reason: str) -> None:
    KeyAuditEntry.objects.create(
        kid=key.kid,
        action=action,
        previous_state=previous_state,
        state=key.state,
        reason=reason[:300],
        actor=actor,
        actor_name=getattr(actor, "username", "") or "",
    )
    logger.warning(
        "signing key %s: %s (%s -> %s) by %s",
        key.kid,
        action,
        previous_state or "-",
        key.state,
        getattr(actor, "username", "-"),
        extra={"event": "signing_key_changed", "kid": key.kid, "action": action, "state": key.state},
    )
    actor_name = getattr(actor, "username", "") or "-"
    transaction.on_commit(  # a change rolled back never happened; partial: the values of now, not of the commit's
        partial(
            event_record,
            "signing_key_changed",
            subject=key.kid,
            severity="warning" if action == "revoke" else "info",
            message=f"Signing key {key.kid}: {action} ({previous_state or '-'} -> {key.state}) by {actor_name}",
            detail={"action": action, "previous_state": previous_state, "state": key.state, "actor": actor_name},
        )
    )


def _changed() -> None:
    transaction.on_commit(ring_cache.invalidate)


@sensitive_variables("secret")
def key_stage(
    *, algorithm: str = KeyAlgorithm.HS256, actor: AbstractBaseUser | None = None, reason: str = "", secret: str = ""
) -> SigningKey:
    """A new NEXT key: published in the JWKS (asymmetric) but not signing yet.

    ``secret`` imports an HS256 secret kept elsewhere (at least 32 bytes); by default one is generated.
    """
    try:
        with transaction.atomic():
            key_stage_check(algorithm=algorithm, secret=secret)
            return _create(algorithm, NEXT, actor, reason, secret, action="stage")
    except IntegrityError as exc:  # the one-NEXT-key constraint: another stage won the race
        raise KeyRingError("A NEXT key is already staged: rotate to it, or retire it first.") from exc


@sensitive_variables("secret")
def key_stage_check(*, algorithm: str, secret: str = "") -> None:
    """Raise KeyRingError when ``key_stage`` would refuse these values (the admin form shows it)."""
    if algorithm not in KeyAlgorithm.values:
        raise KeyRingError(f"Unknown algorithm {algorithm!r}; choose one of {', '.join(KeyAlgorithm.values)}.")
    if secret and algorithm != KeyAlgorithm.HS256:
        raise KeyRingError("Only HS256 secrets can be imported; EdDSA key pairs are generated here.")
    if secret and len(secret.encode()) < MIN_IMPORTED_SECRET_BYTES:
        raise KeyRingError(f"The secret is too short: HS256 needs at least {MIN_IMPORTED_SECRET_BYTES} bytes.")
    if SigningKey.objects.filter(state=NEXT).exists():
        raise KeyRingError("A NEXT key is already staged: rotate to it, or retire it first.")


@sensitive_variables("secret", "material")
def _create(
    algorithm: str, state: str, actor: AbstractBaseUser | None, reason: str, secret: str = "", *, action: str
) -> SigningKey:
    material = NewKeyMaterial(secret.encode(), "") if secret else material_generate(algorithm)
    key = SigningKey.objects.create(
        kid=new_kid(),
        algorithm=algorithm,
        state=state,
        source=KeySource.DATABASE,
        secret_encrypted=secret_encrypt(material.private),
        public_key=material.public_pem,
        activated_at=timezone.now() if state == ACTIVE else None,
        created_by=actor,
    )
    _audit(key, action, "", actor, reason)
    _changed()
    return key


def key_rotate(
    *,
    algorithm: str | None = None,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    emergency: bool = False,
) -> SigningKey:
    """Make a new ACTIVE key; the one it replaces becomes PREVIOUS (verifying until it retires).

    The successor is the staged NEXT key when there is one (an asymmetric one only after it has been in
    the JWKS for ``JWT_JWKS_MAX_AGE``, so verifiers' caches know it), else a new key of ``algorithm``
    (HS256 by default; a new asymmetric key must be staged first, unless ``emergency``).
    """
    try:
        with transaction.atomic():
            return _rotate(algorithm, actor, reason, emergency)
    except IntegrityError as exc:
        raise KeyRingError("Another rotation happened at the same moment; look at the ring and try again.") from exc


def _rotate(algorithm: str | None, actor: AbstractBaseUser | None, reason: str, emergency: bool) -> SigningKey:
    now = timezone.now()
    locked = list(SigningKey.objects.select_for_update().filter(state__in=[NEXT, ACTIVE]).order_by("created_at"))
    staged = next((key for key in locked if key.state == NEXT), None)
    current = next((key for key in locked if key.state == ACTIVE), None)
    max_age = timedelta(seconds=settings.BULWARK_JWT["JWKS_MAX_AGE"])
    if staged is not None and algorithm and staged.algorithm != algorithm and not emergency:
        raise KeyRingError(
            f"The staged NEXT key {staged.kid} is {staged.algorithm}, not {algorithm}: rotate to it or retire it."
        )
    if staged is not None and staged.public_key and now < staged.created_at + max_age and not emergency:
        raise KeyRingError(
            f"The staged key {staged.kid} has been published for less than JWT_JWKS_MAX_AGE; it may sign from "
            f"{(staged.created_at + max_age).isoformat(timespec='seconds')} on (verifiers' JWKS caches must know it)."
        )
    if staged is None and algorithm == KeyAlgorithm.EDDSA and max_age and not emergency:
        raise KeyRingError(
            "A new EdDSA key must be published before it signs: stage it (rotate_jwt_key --stage --algorithm EdDSA), "
            "then rotate once JWT_JWKS_MAX_AGE has passed."
        )

    if current is not None:
        current.state, current.deactivated_at = PREVIOUS, now
        current.save(update_fields=["state", "deactivated_at", "updated_at"])
        _audit(current, "rotate", ACTIVE, actor, reason)
    else:
        _env_signer_step_down(now, actor, reason)

    if staged is not None and (algorithm is None or staged.algorithm == algorithm):
        staged.state, staged.activated_at = ACTIVE, now
        staged.save(update_fields=["state", "activated_at", "updated_at"])
        _audit(staged, "rotate", NEXT, actor, reason)
        successor = staged
    else:
        successor = _create(algorithm or KeyAlgorithm.HS256, ACTIVE, actor, reason, action="rotate")
    _changed()
    return successor


def _env_signer_step_down(now: datetime, actor: AbstractBaseUser | None, reason: str) -> None:
    """The database takes over signing from JWT_SECRET: record that key as PREVIOUS so it retires on time."""
    env_kid, _ = _env_kids()
    row, created = SigningKey.objects.select_for_update().get_or_create(
        kid=env_kid,
        defaults={"source": KeySource.ENVIRONMENT, "state": PREVIOUS, "deactivated_at": now, "algorithm": "HS256"},
    )
    if created:
        _audit(row, "rotate", ACTIVE, actor, reason)


def key_retire(
    *, kid: str, actor: AbstractBaseUser | None = None, reason: str = "", now: datetime | None = None
) -> SigningKey:
    """Stop verifying with a key: a NEXT key at any time, a PREVIOUS key once every token it signed has expired."""
    now = now or timezone.now()
    with transaction.atomic():
        key = _locked_or_env_row(kid)
        if key.state == ACTIVE:
            raise KeyRingError(f"{kid} is the ACTIVE key: rotate first, then retire it once it is PREVIOUS.")
        if key.state in (RETIRED, REVOKED):
            raise KeyRingError(f"{kid} is already {key.state}.")
        if key.state == PREVIOUS:
            if key.deactivated_at is None:
                raise KeyRingError(
                    f"{kid} is JWT_SECRET_PREV: remove it from the environment to retire it (or revoke it here)."
                )
            retire_at = key.deactivated_at + key_retire_delay()
            if now < retire_at:
                raise KeyRingError(
                    f"{kid} may still have signed unexpired tokens: it can be retired from "
                    f"{retire_at.isoformat(timespec='seconds')} on (refresh lifetime plus leeway after it stopped "
                    "signing). To refuse its tokens now, revoke it."
                )
        previous_state = key.state
        key.state, key.retired_at = RETIRED, now
        key.save()
        _audit(key, "retire", previous_state, actor, reason)
        _changed()
        return key


def key_revoke(*, kid: str, actor: AbstractBaseUser | None = None, reason: str = "") -> SigningKey:
    """Refuse every token a key signed, at once (a leaked key). The ACTIVE key is first replaced."""
    try:
        with transaction.atomic():
            return _revoke(kid, actor, reason)
    except IntegrityError as exc:
        raise KeyRingError("Another key change happened at the same moment; look at the ring and try again.") from exc


def _revoke(kid: str, actor: AbstractBaseUser | None, reason: str) -> SigningKey:
    # Lock the signer and the target before deciding: a rotation running now cannot slip in between.
    locked = list(SigningKey.objects.select_for_update().filter(Q(state__in=[NEXT, ACTIVE]) | Q(kid=kid)))
    env_kid, _ = _env_kids()
    signs_now = any(key.kid == kid and key.state == ACTIVE for key in locked) or (
        kid == env_kid and not any(key.state == ACTIVE for key in locked)
    )
    if signs_now:
        key_rotate(actor=actor, reason=f"replacing revoked {kid}: {reason}"[:300], emergency=True)
    key = _locked_or_env_row(kid)
    if key.state == REVOKED:
        raise KeyRingError(f"{kid} is already revoked.")
    previous_state = key.state
    key.state, key.revoked_at = REVOKED, timezone.now()
    key.save()
    _audit(key, "revoke", previous_state, actor, reason)
    _changed()
    return key


def _locked_or_env_row(kid: str) -> SigningKey:
    """The key's row, locked; for an environment key with no row yet, a new one (not saved) in its env state."""
    key = SigningKey.objects.select_for_update().filter(kid=kid).first()
    if key is not None:
        return key
    env_kid, env_prev_kid = _env_kids()
    if kid == env_kid and not SigningKey.objects.filter(state=ACTIVE).exists():
        return SigningKey(kid=kid, source=KeySource.ENVIRONMENT, state=ACTIVE)
    if kid in (env_kid, env_prev_kid):
        return SigningKey(kid=kid, source=KeySource.ENVIRONMENT, state=PREVIOUS)
    raise KeyRingError(f"No key {kid!r} in the ring.")


def keys_reencrypt(*, actor: AbstractBaseUser | None = None) -> int:
    """Rewrite every stored secret under the current SECRET_KEY (after moving the old one to the fallbacks)."""
    count = 0
    with transaction.atomic():
        for key in SigningKey.objects.select_for_update().exclude(secret_encrypted=""):
            try:
                key.secret_encrypted = secret_reencrypt(key.secret_encrypted)
            except KeyDecryptionError as exc:
                raise KeyRingError(
                    f"{key.kid} cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS: put the SECRET_KEY it was "
                    "encrypted under back into SECRET_KEY_FALLBACKS and run again (nothing was changed)."
                ) from exc
            key.save(update_fields=["secret_encrypted", "updated_at"])
            _audit(key, "reencrypt", key.state, actor, "re-encrypted under the current SECRET_KEY")
            count += 1
        _changed()
    return count


def _remember_write(user_id: object) -> None:
    position = primary_position()
    if position is not None:
        remember_user_lsn(user_id, position)


def user_logout_everywhere(*, user: AbstractBaseUser, actor: AbstractBaseUser | None = None) -> int:
    """Every token the user holds stops working (a new generation); their refresh tokens are blacklisted too.

    Returns the new generation.
    """
    with transaction.atomic():
        state, _ = UserTokenState.objects.select_for_update().get_or_create(user=user)
        # Every worker reads the generation with the user, maybe from a replica: make them wait for this write.
        transaction.on_commit(lambda: _remember_write(user.pk))
        state.generation += 1
        state.logged_out_at = timezone.now()
        state.save()
        outstanding = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now(), blacklistedtoken=None)
        BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
        )
    logger.warning(
        "user %s logged out everywhere by %s",
        user.pk,
        getattr(actor, "username", "-"),
        extra={"event": "logout_everywhere", "user_id": user.pk},
    )
    if hasattr(user, "_state") and "token_state" in user._state.fields_cache:
        user._state.fields_cache["token_state"] = state
    return state.generation
