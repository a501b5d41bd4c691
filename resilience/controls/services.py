"""Changing a switch: stored, audited (who, when, why) and obeyed by this process at once."""

from __future__ import annotations

import logging
from functools import partial

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.state import control_apply_local, controls_replace
from resilience.events import event_record

logger = logging.getLogger("resilience.controls")


@transaction.atomic
def control_set(*, key: str, enabled: bool, actor: AbstractBaseUser | None, reason: str = "") -> OperatorControl:
    control, created = OperatorControl.objects.select_for_update().get_or_create(key=key)
    previous = None if created else control.enabled
    control.enabled = enabled
    control.reason = reason
    control.updated_by = actor
    control.save()
    ControlAuditEntry.objects.create(
        key=key,
        enabled=enabled,
        previous=previous,
        reason=reason,
        actor=actor,
        actor_name=getattr(actor, "username", "") or "",
    )
    transaction.on_commit(lambda: control_apply_local(key, enabled))
    logger.warning(
        "operator control %s set to %s by %s",
        key,
        enabled,
        getattr(actor, "username", "-"),
        extra={"event": "control_changed", "control": key, "enabled": enabled},
    )
    actor_name = getattr(actor, "username", "") or "-"
    transaction.on_commit(  # a change rolled back never happened
        partial(
            event_record,
            "control_changed",
            subject=key,
            severity="warning",
            message=f"Operator control {key} set to {'on' if enabled else 'off'} by {actor_name}"
            + (f": {reason}" if reason else ""),
            detail={"enabled": enabled, "previous": previous, "actor": actor_name, "reason": reason},
        )
    )
    return control


def controls_load() -> None:
    """Read every switch once (a process without the database monitor, e.g. a management command)."""
    controls_replace(OperatorControl.objects.values_list("key", "enabled"))
