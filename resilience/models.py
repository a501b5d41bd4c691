"""Models of the resilience layer (each defined in its own subpackage)."""

from resilience.auth.models import KeyAuditEntry, SigningKey, UserTokenState
from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.events.models import ResilienceEvent
from resilience.idempotency.models import IdempotencyRecord

__all__ = [
    "ControlAuditEntry",
    "IdempotencyRecord",
    "KeyAuditEntry",
    "OperatorControl",
    "ResilienceEvent",
    "SigningKey",
    "UserTokenState",
]
