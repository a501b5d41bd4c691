"""The idempotency error an API client sees: a key reused with another request body."""

from core.exceptions import AppError


class IdempotencyKeyMismatchError(AppError):
    code = "idempotency_key_mismatch"
    message = "This Idempotency-Key was already used with a different request body."
