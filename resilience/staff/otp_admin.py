"""The second factor in Bulwark's admin: django-otp's TOTP and backup-code device admins, on this site, tightened.

- Listing devices needs the model's view permission; changing or deleting one needs ``may_operate``
  (``resilience.operate_controls`` and a verified second factor). Adding one is not offered: enrolment is
  ``python manage.py staff_otp enroll USER``, which shows the secret once.
- No page shows a secret: no TOTP key or QR code of an existing device, no backup code (django-otp's
  ``OTP_ADMIN_HIDE_SENSITIVE_DATA``, whatever the setting says).
- Deleting a device, and the user admin's action "Reset second factor" (:func:`reset_second_factor`), go through
  :func:`resilience.staff.otp.otp_devices_remove`: the devices are removed and every session of that user ends.

Importing this module registers the device admins (``resilience.auth.admin`` does, beside the user admin).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django_otp.plugins.otp_static.admin import StaticDeviceAdmin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from resilience.dashboard.permissions import may_operate
from resilience.staff.otp import otp_devices_remove

SHOWN_ONCE = (
    "A second factor's secret is shown once, at enrolment: `python manage.py staff_otp enroll USER --force` "
    "replaces it."
)


class _SecondFactorAdmin:
    """Shared by both device admins (placed before django-otp's ModelAdmin in the bases)."""

    def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
        return False  # enrol with `manage.py staff_otp enroll`: the secret is shown there, once

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_operate(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_operate(request) and super().has_delete_permission(request, obj)  # type: ignore[misc]

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        otp_devices_remove(user=obj.user, devices=[obj], actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        by_user: dict[Any, list[Any]] = defaultdict(list)
        for device in queryset.select_related("user"):
            by_user[device.user].append(device)
        for user, devices in by_user.items():
            otp_devices_remove(user=user, devices=devices, actor=request.user)


class BulwarkTOTPDeviceAdmin(_SecondFactorAdmin, TOTPDeviceAdmin):
    def get_list_display(self, request: HttpRequest) -> list[str]:
        return [name for name in super().get_list_display(request) if name != "qrcode_link"]

    def get_fieldsets(self, request: HttpRequest, obj: TOTPDevice | None = None) -> list[Any]:
        fieldsets = []
        for name, options in super().get_fieldsets(request, obj):
            fields = [field for field in options["fields"] if field not in ("key", "qrcode_link")]
            if fields:
                fieldsets.append((name, {**options, "fields": fields}))
        return fieldsets

    def config_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        raise PermissionDenied(SHOWN_ONCE)

    def qrcode_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        raise PermissionDenied(SHOWN_ONCE)


class BulwarkStaticDeviceAdmin(_SecondFactorAdmin, StaticDeviceAdmin):
    list_display = ["user", "name", "codes_left", "created_at", "last_used_at", "confirmed"]

    def get_inline_instances(self, request: HttpRequest, obj: StaticDevice | None = None) -> list[Any]:
        return []  # the codes themselves are never shown again

    @admin.display(description="codes left")
    def codes_left(self, device: StaticDevice) -> int:
        return device.token_set.count()


for model, model_admin in ((TOTPDevice, BulwarkTOTPDeviceAdmin), (StaticDevice, BulwarkStaticDeviceAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)


@admin.action(
    description="Reset second factor: remove the selected users' devices and end their sessions",
    permissions=["operate"],
)
def reset_second_factor(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """The user admin's action (needs its ``has_operate_permission``: ``may_operate``)."""
    removed = 0
    for user in queryset:
        try:
            removed += otp_devices_remove(user=user, actor=request.user)
        except DatabaseError as exc:
            modeladmin.message_user(
                request, f"{user}: second factor not reset ({exc.__class__.__name__}): try again", messages.ERROR
            )
            return
    modeladmin.message_user(
        request, f"{removed} second-factor device(s) removed; the sessions of {queryset.count()} user(s) ended."
    )
