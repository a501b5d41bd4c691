"""The signing-key ring as stored: keys, their audit trail, and each user's token generation."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from resilience.audit import AuditEntry


class KeyState(models.TextChoices):
    NEXT = "next", "next (published, not signing yet)"
    ACTIVE = "active", "active (signs)"
    PREVIOUS = "previous", "previous (verifies only)"
    RETIRED = "retired", "retired"
    REVOKED = "revoked", "revoked"


class KeyAlgorithm(models.TextChoices):
    HS256 = "HS256", "HS256 (shared secret)"
    EDDSA = "EdDSA", "EdDSA (Ed25519 key pair, public key in the JWKS)"


class KeySource(models.TextChoices):
    DATABASE = "database", "database"
    ENVIRONMENT = "environment", "environment (JWT_SECRET / JWT_SECRET_PREV)"


class SigningKey(models.Model):
    """One key of the ring. A row with source ``environment`` holds no secret: it records the state of an
    environment key (``JWT_SECRET``) once the database ring took over signing, or an operator's retire/revoke."""

    kid = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=10, choices=KeyAlgorithm.choices, default=KeyAlgorithm.HS256)
    state = models.CharField(max_length=10, choices=KeyState.choices)
    source = models.CharField(max_length=12, choices=KeySource.choices, default=KeySource.DATABASE)
    # Fernet token (resilience.auth.crypto) of the HS secret or the Ed25519 private key; never shown.
    secret_encrypted = models.TextField(blank=True, editable=False)
    public_key = models.TextField(blank=True, editable=False, help_text="PEM of the public key (EdDSA only).")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True, help_text="When it stopped signing.")
    retired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state="active"), name="auth_signing_key_one_active"
            ),
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state="next"), name="auth_signing_key_one_next"
            ),
            models.CheckConstraint(
                condition=models.Q(source="database") | ~models.Q(state__in=["next", "active"]),
                name="auth_signing_key_env_rows_never_sign",
            ),
            models.CheckConstraint(
                condition=models.Q(source="environment") | ~models.Q(secret_encrypted=""),
                name="auth_signing_key_database_rows_have_secret",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.algorithm}, {self.state})"


class KeyAuditEntry(AuditEntry):
    """Who changed which key's state, when, and why. Kept when the key's row is gone."""

    kid = models.CharField(max_length=64, db_index=True)
    action = models.CharField(max_length=20)  # stage, rotate, retire, revoke, reencrypt
    previous_state = models.CharField(max_length=10, blank=True)
    state = models.CharField(max_length=10)

    class Meta(AuditEntry.Meta):
        verbose_name_plural = "key audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.kid}"


class UserTokenState(models.Model):
    """A user's token generation: every token carries it, and "log out everywhere" raises it."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="token_state"
    )
    generation = models.PositiveIntegerField(default=0)
    logged_out_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"user {self.user_id}: generation {self.generation}"
