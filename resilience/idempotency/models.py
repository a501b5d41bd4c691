from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """The stored outcome of one idempotent request, per user, scope and key."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request body.")
    response_status = models.PositiveSmallIntegerField()
    # Kept as the JSON text that was sent (not jsonb, which reorders keys): a replay is the same body.
    response_body = models.TextField(blank=True)
    complete = models.BooleanField(
        default=True, help_text="False while the work after the commit (e.g. collecting a payment) still runs."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "scope", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"
