"""Admin for the signing-key ring: every change goes through resilience.auth.services (locked, audited).

Secrets are write-only: the add form takes an optional HS256 secret to import (never rendered back), and
no page shows stored key material. Keys are never deleted (retire or revoke them); the audit is read-only.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from resilience.auth.models import KeyAuditEntry, SigningKey
from resilience.auth.services import (
    KeyRingError,
    key_retire,
    key_retire_delay,
    key_revoke,
    key_rotate,
    key_stage,
    key_stage_check,
    user_logout_everywhere,
)
from resilience.dashboard.permissions import OperateControlsRequired, may_operate
from resilience.staff.otp_admin import reset_second_factor  # also puts the second-factor devices on this site
from resilience.staff.sessions import end_staff_sessions


class SigningKeyAddForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="HS256 only, optional: a secret kept elsewhere (at least 32 bytes). Empty: one is generated. "
        "It is encrypted at rest and never shown again.",
    )
    reason = forms.CharField(required=False, max_length=300, help_text="Kept in the audit log.")

    class Meta:
        model = SigningKey
        fields = ["algorithm"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            key_stage_check(algorithm=data.get("algorithm", ""), secret=data.get("secret", ""))
        except KeyRingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return data


@admin.register(SigningKey)
class SigningKeyAdmin(OperateControlsRequired, admin.ModelAdmin):
    list_display = ["kid", "algorithm", "effective_state", "source", "created_at", "activated_at", "retires_at"]
    list_filter = ["state", "algorithm", "source"]
    search_fields = ["kid"]
    actions = ["rotate", "retire", "revoke"]
    readonly_fields = [
        "kid",
        "algorithm",
        "state",
        "source",
        "created_at",
        "activated_at",
        "deactivated_at",
        "retired_at",
        "revoked_at",
        "created_by",
    ]

    def get_form(self, request: HttpRequest, obj: SigningKey | None = None, **kwargs: Any) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = SigningKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: SigningKey | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: SigningKey | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else ["algorithm", "secret", "reason"]

    def save_model(self, request: HttpRequest, obj: SigningKey, form: Any, change: bool) -> None:
        if change:
            return  # nothing is editable: state changes are actions
        try:
            key = key_stage(
                algorithm=form.cleaned_data["algorithm"],
                actor=request.user,
                reason=form.cleaned_data.get("reason", ""),
                secret=form.cleaned_data.get("secret", ""),
            )
        except KeyRingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        obj.pk = key.pk

    @method_decorator(sensitive_post_parameters("secret"))  # never in an error report
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None):
        try:
            return super().add_view(request, form_url, extra_context)
        except forms.ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)  # lost a race with another change
            return redirect(request.path)

    def has_delete_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False  # retire or revoke instead: the history stays

    @admin.display(description="state")
    def effective_state(self, obj: SigningKey) -> str:
        if obj.state == "previous" and obj.deactivated_at and timezone.now() >= obj.deactivated_at + key_retire_delay():
            return "retired (expired)"
        return obj.state

    @admin.display(description="retires at")
    def retires_at(self, obj: SigningKey) -> str:
        if obj.state == "previous" and obj.deactivated_at:
            return (obj.deactivated_at + key_retire_delay()).isoformat(timespec="seconds")
        return "-"

    def _each(self, request: HttpRequest, queryset: QuerySet[SigningKey], change, verb: str) -> None:
        for key in queryset:
            try:
                change(kid=key.kid, actor=request.user, reason=f"admin {verb}")
            except (KeyRingError, DatabaseError) as exc:
                self.message_user(request, f"{key.kid}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{key.kid} {verb}d.", messages.SUCCESS)

    @admin.action(
        description="Rotate: a new ACTIVE key (the staged NEXT key if there is one, else a new HS256 key)",
        permissions=["operate"],
    )
    def rotate(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        try:
            key = key_rotate(actor=request.user, reason="admin rotate")
        except (KeyRingError, DatabaseError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{key.kid} is now ACTIVE; the previous key verifies until it retires.")

    @admin.action(
        description="Retire the selected keys (NEXT, or PREVIOUS whose tokens have all expired)",
        permissions=["operate"],
    )
    def retire(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        self._each(request, queryset, key_retire, "retire")

    @admin.action(
        description="Revoke the selected keys now (their tokens are refused within 2 s everywhere)",
        permissions=["operate"],
    )
    def revoke(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        self._each(request, queryset, key_revoke, "revoke")


@admin.register(KeyAuditEntry)
class KeyAuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_name", "action", "kid", "previous_state", "state", "reason"]
    list_filter = ["action", "state"]
    search_fields = ["kid", "actor_name", "reason"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: KeyAuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: KeyAuditEntry | None = None) -> bool:
        return False


User = get_user_model()


class BulwarkUserAdmin(UserAdmin):
    actions = ["logout_everywhere", end_staff_sessions, reset_second_factor]  # the last two: resilience/staff

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return may_operate(request)  # "Reset second factor": resilience.operate_controls and a verified session

    @admin.action(description="Log out everywhere: every token of the selected users stops working")
    def logout_everywhere(self, request: HttpRequest, queryset: QuerySet) -> None:
        for user in queryset:
            try:
                user_logout_everywhere(user=user, actor=request.user)
            except DatabaseError as exc:
                self.message_user(request, f"{user}: not logged out ({exc.__class__.__name__})", messages.ERROR)
                return
        self.message_user(request, f"{queryset.count()} user(s) logged out everywhere.")


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, BulwarkUserAdmin)
