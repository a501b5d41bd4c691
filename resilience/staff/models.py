"""What staff access stores: each staff user's session epoch, and the login audit (a view of the events)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from resilience.events.models import ResilienceEvent

STAFF_LOGIN_KINDS = ("staff_login", "staff_login_failed", "staff_login_refused", "staff_login_burst")


class StaffSessionEpoch(models.Model):
    """A staff user's session generation: every session carries the epoch it was opened in, and one with an older
    epoch is refused. Raising it (logout, password change, second factor removed, "end all sessions") ends every
    session of that user at once, signed cookies included."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="staff_session_epoch"
    )
    epoch = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}: epoch {self.epoch}"


class StaffLoginManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(kind__in=STAFF_LOGIN_KINDS)


class StaffLogin(ResilienceEvent):
    """The admin's view of staff logins: the resilience events of the ``staff_login*`` kinds (durable the same way:
    buffered in the worker while the primary is down). ``subject`` is the username; ``detail`` holds the client IP,
    the user agent, the user id and the outcome."""

    objects = StaffLoginManager()

    class Meta:
        proxy = True
        verbose_name = "staff login"
        ordering = ["-at", "-id"]
