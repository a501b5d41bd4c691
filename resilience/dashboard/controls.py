"""The dashboard's buttons: each validated, described (what it will do, whether it needs a confirmation), and
applied through the same services the admin pages and the commands call — stored, audited (who, when, why),
obeyed by every worker within about a second.

Every control is stored on the primary. With the primary down the dashboard says so and changes nothing, rather
than failing: the switches already set keep being obeyed (each worker reads them from a replica).
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError

from resilience.auth.services import KeyRingError, key_rotate
from resilience.breakers.breaker import Forced
from resilience.breakers.controls import PREFIX as BREAKER_PREFIX
from resilience.breakers.controls import breaker_force_set, breaker_retry_now
from resilience.controls.admin import control_choices
from resilience.controls.services import control_set
from resilience.controls.state import DRAIN_PREFIX, PRIMARY_ONLY_READS, RATELIMIT_FORCE_MEMORY, READ_ONLY
from resilience.db.nodes import registry

SWITCH, BREAKER, ROTATE_KEY = "switch", "breaker", "rotate_key"
BREAKER_MODES = ("open", "closed", "automatic", "retry")
PRIMARY_DOWN = (
    "The primary database is down, and this control is stored there: nothing changed. The switches already set "
    "keep being obeyed; try again when the primary is back (the Database area turns green)."
)

_SWITCH_EFFECTS = {
    READ_ONLY: "Every write (sign-ups, carts, orders) answers 503 read_only_mode in every worker within about a "
    "second. Reads keep working.",
    PRIMARY_ONLY_READS: "Every read goes to the primary: the replicas serve nothing until this is switched off.",
    RATELIMIT_FORCE_MEMORY: "Every worker counts rate limits and caches in its own memory (each enforces its share "
    "of every limit); Redis is left alone.",
}


def _switch_keys() -> dict[str, str]:
    return {key: label for key, label in control_choices() if not key.startswith(BREAKER_PREFIX)}


class ControlForm(forms.Form):
    action = forms.ChoiceField(choices=[(SWITCH, "switch"), (BREAKER, "breaker"), (ROTATE_KEY, "rotate key")])
    target = forms.CharField(required=False, max_length=100)
    value = forms.CharField(required=False, max_length=20)
    reason = forms.CharField(max_length=300, strip=True, error_messages={"required": "Say why: it is audited."})
    confirmed = forms.BooleanField(required=False)

    def clean(self) -> dict:
        data = super().clean()
        action, target, value = data.get("action"), data.get("target", ""), data.get("value", "")
        if action == SWITCH:
            if target not in _switch_keys():
                self.add_error("target", f"unknown switch {target!r}")
            if value not in ("on", "off"):
                self.add_error("value", "on or off")
        elif action == BREAKER:
            if target not in settings.BULWARK_BREAKERS:
                self.add_error("target", f"unknown breaker {target!r}")
            if value not in BREAKER_MODES:
                self.add_error("value", f"one of {', '.join(BREAKER_MODES)}")
        return data


@dataclass(frozen=True)
class Control:
    action: str
    target: str
    value: str
    reason: str

    @classmethod
    def from_form(cls, form: ControlForm) -> Control:
        data = form.cleaned_data
        return cls(data["action"], data.get("target", ""), data.get("value", ""), data["reason"])

    @property
    def title(self) -> str:
        if self.action == SWITCH:
            return f"{_switch_keys()[self.target]}: turn {self.value}"
        if self.action == BREAKER:
            return f"Breaker {self.target}: {'retry now' if self.value == 'retry' else self.value}"
        return "Rotate the JWT signing key"

    @property
    def dangerous(self) -> bool:
        """Whether the operator confirms first: anything that refuses traffic, moves it, or changes keys."""
        if self.action == SWITCH:
            return self.value == "on"
        if self.action == BREAKER:
            return self.value in ("open", "closed")
        return True

    @property
    def effect(self) -> str:
        if self.action == SWITCH:
            if self.value == "off":
                return "Back to normal for this switch in every worker within about a second."
            if self.target.startswith(DRAIN_PREFIX):
                return f"No new reads go to {self.target.removeprefix(DRAIN_PREFIX)}; the other nodes take them."
            return _SWITCH_EFFECTS[self.target]
        if self.action == BREAKER:
            return {
                "open": f"Every call to {self.target} is refused at once and its fallback serves (a payment waits "
                "as pending_payment, collected later by retry_payments).",
                "closed": f"Every call to {self.target} goes through, even while it fails: the breaker stops "
                "protecting the service.",
                "automatic": f"The breaker of {self.target} decides again from the calls' outcomes.",
                "retry": f"The next call to {self.target} is a trial: if it succeeds, the breaker closes.",
            }[self.value]
        return (
            "A new key signs every token from now on. The current key keeps verifying until every token it signed "
            "has expired: nobody is logged out."
        )


class ControlRefused(Exception):
    """The control was not applied; the message says why, for the operator."""


def control_apply(control: Control, *, actor: AbstractBaseUser) -> str:
    """Apply ``control`` as ``actor``; a sentence for the operator, or ControlRefused."""
    if not registry().primary_available():
        raise ControlRefused(PRIMARY_DOWN)
    try:
        if control.action == SWITCH:
            control_set(key=control.target, enabled=control.value == "on", actor=actor, reason=control.reason)
            return f"{control.title}: done. Every worker obeys within about a second."
        if control.action == BREAKER:
            if control.value == "retry":
                breaker_retry_now(name=control.target, actor=actor, reason=control.reason)
            else:
                mode = {"open": Forced.OPEN, "closed": Forced.CLOSED, "automatic": Forced.AUTOMATIC}[control.value]
                breaker_force_set(name=control.target, mode=mode, actor=actor, reason=control.reason)
            return f"{control.title}: done."
        key = key_rotate(actor=actor, reason=control.reason)
        return f"{key.kid} now signs; the previous key verifies until its tokens expire."
    except KeyRingError as exc:
        raise ControlRefused(str(exc)) from exc
    except DatabaseError as exc:  # the primary failed during the change: atomic, so nothing was written
        raise ControlRefused(PRIMARY_DOWN) from exc
