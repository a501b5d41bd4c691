from django.contrib import admin

from resilience.idempotency.models import IdempotencyRecord


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["scope", "key", "user", "response_status", "created_at"]
    list_filter = ["scope", "response_status"]
    search_fields = ["key", "user__username"]
    readonly_fields = ["user", "scope", "key", "fingerprint", "response_status", "response_body", "created_at"]


from resilience.auth.admin import KeyAuditEntryAdmin, SigningKeyAdmin  # noqa: E402,F401 - registers them
from resilience.controls.admin import ControlAuditEntryAdmin, OperatorControlAdmin  # noqa: E402,F401 - registers them
from resilience.events.admin import ResilienceEventAdmin  # noqa: E402,F401 - registers it
from resilience.staff.admin import StaffLoginAdmin  # noqa: E402,F401 - registers it
