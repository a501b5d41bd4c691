"""Admin for operator switches: every change goes through ``control_set`` (stored, audited, obeyed)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest

from resilience.breakers.controls import breaker_control_choices, breaker_force_set, force_key_parse
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.services import control_set
from resilience.controls.state import DRAIN_PREFIX, PRIMARY_ONLY_READS, RATELIMIT_FORCE_MEMORY, READ_ONLY
from resilience.dashboard.permissions import OperateControlsRequired


def control_choices() -> list[tuple[str, str]]:
    choices = [
        (READ_ONLY, "Read-only mode (maintenance): every write answers 503 read_only_mode"),
        (PRIMARY_ONLY_READS, "Primary-only reads: no read goes to a replica"),
        (
            RATELIMIT_FORCE_MEMORY,
            "Rate limits in memory: skip Redis, count in each worker (the per-worker share of each limit)",
        ),
    ]
    for alias in settings.DATABASES:
        if alias != "default":
            choices.append((f"{DRAIN_PREFIX}{alias}", f"Drain {alias}: no new reads go to it"))
    return choices + breaker_control_choices()


class OperatorControlForm(forms.ModelForm):
    key = forms.ChoiceField(choices=control_choices)

    class Meta:
        model = OperatorControl
        fields = ["key", "enabled", "reason"]


@admin.register(OperatorControl)
class OperatorControlAdmin(OperateControlsRequired, admin.ModelAdmin):
    form = OperatorControlForm
    list_display = ["key", "enabled", "reason", "updated_by", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["key", "reason"]

    def get_readonly_fields(self, request: HttpRequest, obj: OperatorControl | None = None) -> list[str]:
        return ["key"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: OperatorControl, form: Any, change: bool) -> None:
        forced = force_key_parse(obj.key)
        if forced is not None and obj.enabled:  # force open and force closed exclude each other
            name, mode = forced
            breaker_force_set(name=name, mode=mode, actor=request.user, reason=obj.reason)
            obj.pk = OperatorControl.objects.get(key=obj.key).pk
            return
        saved = control_set(key=obj.key, enabled=obj.enabled, actor=request.user, reason=obj.reason)
        obj.pk = saved.pk

    def has_delete_permission(self, request: HttpRequest, obj: OperatorControl | None = None) -> bool:
        return False  # switch it off instead: the change is audited


@admin.register(ControlAuditEntry)
class ControlAuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_name", "key", "previous", "enabled", "reason"]
    list_filter = ["key", "enabled"]
    search_fields = ["key", "actor_name", "reason"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ControlAuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ControlAuditEntry | None = None) -> bool:
        return False
