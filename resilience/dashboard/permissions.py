"""Who may change things: staff see the dashboard; the live controls need ``resilience.operate_controls``."""

from __future__ import annotations

from django.http import HttpRequest

OPERATE_CONTROLS = "resilience.operate_controls"


def may_operate(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(OPERATE_CONTROLS))


class OperateControlsRequired:
    """A ModelAdmin mixin: adding or changing its objects, and its ``permissions=["operate"]`` actions, need the
    operate permission on top of the model's own (viewing stays with the model's view permission)."""

    def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
        return may_operate(request) and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return may_operate(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return may_operate(request)
