"""The stored record of resilience events (written by :mod:`resilience.events.buffer`, never by a request)."""

from __future__ import annotations

from django.db import models

from resilience.events.buffer import SEVERITIES


class ResilienceEvent(models.Model):
    """One change of state a worker saw: a node down or up, a failover, a breaker trip, a key or switch change."""

    # Set by the emitter: a flush retried after a write whose outcome was unknown stores the event once.
    uid = models.UUIDField(unique=True, editable=False)
    at = models.DateTimeField(db_index=True, help_text="When it happened (not when it was written).")
    kind = models.CharField(max_length=64, db_index=True, help_text="e.g. db_node_down, breaker_state_changed.")
    severity = models.CharField(max_length=10, choices=[(s, s) for s in SEVERITIES], default="info")
    subject = models.CharField(max_length=200, blank=True, help_text="The node, breaker, key id or switch.")
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="hostname:pid of the process that saw it.")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.subject}".rstrip()
