"""Operator overrides for breakers: force open, force closed, or automatic; stored, audited, obeyed by every worker.

Two switches per breaker in :mod:`resilience.controls` (``breaker.<name>.force_open`` and
``breaker.<name>.force_closed``), so the switches keep their one boolean and their audit trail; each worker
refreshes them every second (the database monitor), and a breaker reads them on every call, so a change is
obeyed everywhere within about a second. :func:`breaker_force_set` keeps the two exclusive; should both be
on anyway, *open* wins (the safe side: the dependency is left alone).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from resilience.breakers.breaker import Forced
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.services import control_set
from resilience.controls.state import switches

PREFIX = "breaker."
FORCE_OPEN, FORCE_CLOSED = "force_open", "force_closed"


def force_key(name: str, mode: str) -> str:
    return f"{PREFIX}{name}.{mode}"


def force_key_parse(key: str) -> tuple[str, Forced] | None:
    """``breaker.<name>.force_open`` -> (name, Forced.OPEN); None for any other key."""
    if not key.startswith(PREFIX):
        return None
    name, _, mode = key.removeprefix(PREFIX).rpartition(".")
    if not name or mode not in (FORCE_OPEN, FORCE_CLOSED):
        return None
    return name, Forced.OPEN if mode == FORCE_OPEN else Forced.CLOSED


def forced_mode(name: str) -> Forced:
    """The operator's mode for this breaker as this process knows the switches now."""
    known = switches()
    if known.get(force_key(name, FORCE_OPEN)):
        return Forced.OPEN
    if known.get(force_key(name, FORCE_CLOSED)):
        return Forced.CLOSED
    return Forced.AUTOMATIC


@transaction.atomic
def breaker_force_set(*, name: str, mode: Forced, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """Force a breaker open or closed, or give it back to automatic; each switch that changes is audited."""
    wanted = {force_key(name, FORCE_OPEN): mode is Forced.OPEN, force_key(name, FORCE_CLOSED): mode is Forced.CLOSED}
    known = dict(OperatorControl.objects.filter(key__in=wanted).values_list("key", "enabled"))
    # Turn the other one off first: the two are never on together, not even between the two writes.
    for key in sorted(wanted, key=lambda k: wanted[k]):
        if known.get(key, False) != wanted[key] or wanted[key]:
            control_set(key=key, enabled=wanted[key], actor=actor, reason=reason)


def breaker_control_choices() -> list[tuple[str, str]]:
    """The admin's choices for every configured breaker."""
    choices = []
    for name in settings.BULWARK_BREAKERS:
        choices.append((force_key(name, FORCE_OPEN), f"Breaker {name}: force open (never call it)"))
        choices.append((force_key(name, FORCE_CLOSED), f"Breaker {name}: force closed (always call it)"))
    return choices


RETRY_NOW = "retry_now"


def breaker_retry_now(*, name: str, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """An operator asks for a trial call now instead of after the reset timeout (audited; see ``trial_now``).

    A forced mode is lifted first: retrying is asking the breaker to decide again."""
    from resilience.breakers.registry import breaker_get  # the registry imports this module

    breaker_force_set(name=name, mode=Forced.AUTOMATIC, actor=actor, reason=reason)
    ControlAuditEntry.objects.create(
        key=f"{PREFIX}{name}.{RETRY_NOW}",
        enabled=True,
        previous=None,
        reason=reason,
        actor=actor,
        actor_name=getattr(actor, "username", "") or "",
    )
    breaker_get(name).trial_now()
