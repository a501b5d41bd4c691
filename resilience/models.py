"""Models of the resilience layer (each defined in its own subpackage)."""

from resilience.auth.models import KeyAuditEntry, SigningKey, UserTokenState
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.events.models import ResilienceEvent
from resilience.idempotency.models import IdempotencyRecord
from resilience.staff.models import StaffLogin, StaffSessionEpoch

__all__ = [
    "ControlAuditEntry",
    "IdempotencyRecord",
    "KeyAuditEntry",
    "OperatorControl",
    "ResilienceEvent",
    "SigningKey",
    "StaffLogin",
    "StaffSessionEpoch",
    "UserTokenState",
]
