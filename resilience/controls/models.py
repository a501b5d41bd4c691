from django.conf import settings
from django.db import models

from resilience.audit import AuditEntry


class OperatorControl(models.Model):
    """One switch, e.g. ``db.read_only`` or ``db.drain.replica_1``."""

    key = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        # Staff may look at the dashboard; changing a switch, a breaker or a signing key needs this.
        permissions = [("operate_controls", "Can operate the live resilience controls and signing keys")]

    def __str__(self) -> str:
        return f"{self.key}={'on' if self.enabled else 'off'}"


class ControlAuditEntry(AuditEntry):
    """Who changed which switch, when, and why."""

    key = models.CharField(max_length=100, db_index=True)
    enabled = models.BooleanField()
    previous = models.BooleanField(null=True)

    class Meta(AuditEntry.Meta):
        verbose_name_plural = "control audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.key}={self.enabled}"
