"""The one exception hierarchy. Raise an ``AppError`` subclass anywhere; one handler renders it.

Each error carries a stable snake_case ``code`` (API clients branch on it), an HTTP status,
a human message, optional structured ``detail`` and optional response headers.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error Bulwark shows to an API client."""

    code: str = "error"
    http_status: int = 400
    message: str = "The request could not be processed."

    def __init__(
        self, message: str | None = None, *, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.message = message or self.message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)


class NotFoundError(AppError):
    code = "not_found"
    http_status = 404
    message = "Not found."


class ConflictError(AppError):
    code = "conflict"
    http_status = 409


class TokenNotValidError(AppError):
    """A bearer or refresh token was refused; ``reason`` says why in one word, nothing more."""

    code = "token_not_valid"
    http_status = 401
    message = "The token is not valid."

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(
            message, detail={"reason": reason}, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
        self.reason = reason


class InvalidCredentialsError(AppError):
    code = "invalid_credentials"
    http_status = 401
    message = "No active account matches these credentials."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class IdempotencyKeyMismatchError(AppError):
    code = "idempotency_key_mismatch"
    http_status = 422
    message = "This Idempotency-Key was already used with a different request body."


class DependencyUnavailableError(AppError):
    code = "dependency_unavailable"
    http_status = 503
    message = "A service this request needs is unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class RateLimitedError(AppError):
    """Over a rate limit: ``Retry-After`` and the ``RateLimit-*`` headers say when to come back."""

    code = "rate_limited"
    http_status = 429
    message = "Too many requests; retry after the number of seconds in Retry-After."

    def __init__(self, *, scope: str, limit: int, window: int, reset: int) -> None:
        super().__init__(
            f"Too many requests ({scope}: {limit} per {window} s); retry in {reset} s.",
            detail={"scope": scope, "limit": limit, "window_seconds": window, "retry_after": reset},
            headers={
                "Retry-After": str(reset),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
            },
        )
        self.scope = scope


class FieldValidationError(AppError):
    """A request field is invalid in a way only the service can tell (unknown product, taken username)."""

    code = "validation_error"
    http_status = 400
    message = "The request has invalid fields; see detail."

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(detail=errors)
