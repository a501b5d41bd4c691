"""Admin for the event record: searchable, filterable, read-only (rows are written by the event buffer only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from resilience.events.models import ResilienceEvent


@admin.register(ResilienceEvent)
class ResilienceEventAdmin(admin.ModelAdmin):
    list_display = ["at", "kind", "severity", "subject", "message", "worker"]
    list_filter = ["kind", "severity"]
    search_fields = ["subject", "message", "kind", "worker"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ResilienceEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ResilienceEvent | None = None) -> bool:
        return False
