"""Who may change things: staff see the dashboard; the live controls need ``resilience.operate_controls`` and a
session verified by a second factor.

:func:`may_operate` is the single gate: the dashboard's controls, the :class:`OperateControlsRequired` admins
(operator controls, signing keys) with their ``permissions=["operate"]`` actions, and the second factor's own
admin (changing or deleting a device, the user admin's "Reset second factor", :mod:`resilience.staff.otp_admin`)
all go through it. It wants the permission **and** ``request.user.is_verified()`` (django-otp's middleware: this
session was verified by a confirmed TOTP device or a backup code, at the login or on ``/admin/otp/verify/``) —
superusers included. Without django-otp's middleware nobody is verified, so nobody operates (fails closed).
"""

from __future__ import annotations

from django.http import HttpRequest

OPERATE_CONTROLS = "resilience.operate_controls"


def has_operate_permission(request: HttpRequest) -> bool:
    """The permission alone (what the dashboard uses to say "verify your second factor" rather than "ask for it")."""
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(OPERATE_CONTROLS))


def second_factor_verified(request: HttpRequest) -> bool:
    is_verified = getattr(request.user, "is_verified", None)
    return bool(callable(is_verified) and is_verified())


def may_operate(request: HttpRequest) -> bool:
    return has_operate_permission(request) and second_factor_verified(request)


class OperateControlsRequired:
    """A ModelAdmin mixin: adding or changing its objects, and its ``permissions=["operate"]`` actions, need the
    operate permission and a verified second factor on top of the model's own (viewing stays with the model's view
    permission)."""

    def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
        return may_operate(request) and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return may_operate(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return may_operate(request)
