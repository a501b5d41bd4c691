"""Models of the resilience layer (each defined in its own subpackage)."""

from resilience.idempotency.models import IdempotencyRecord

__all__ = ["IdempotencyRecord"]
