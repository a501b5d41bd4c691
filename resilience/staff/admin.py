"""Admin for the staff log-in audit: the ``staff_login*`` resilience events, searchable by username and client IP,
read-only (rows are written by the event buffer only; with the primary down they are read from a replica)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from resilience.staff.models import StaffLogin


@admin.register(StaffLogin)
class StaffLoginAdmin(admin.ModelAdmin):
    list_display = ["at", "kind", "username", "ip", "outcome", "worker"]
    list_filter = ["kind"]
    # The IP is a key of the JSON detail: ``detail__ip`` searches ``detail ->> 'ip'`` (icontains) on PostgreSQL.
    search_fields = ["subject", "detail__ip"]
    date_hierarchy = "at"

    @admin.display(description="username", ordering="subject")
    def username(self, obj: StaffLogin) -> str:
        return obj.subject

    @admin.display(description="IP")
    def ip(self, obj: StaffLogin) -> str:
        return str((obj.detail or {}).get("ip", ""))

    @admin.display(description="outcome")
    def outcome(self, obj: StaffLogin) -> str:
        return str((obj.detail or {}).get("outcome", ""))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StaffLogin | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StaffLogin | None = None) -> bool:
        return False
