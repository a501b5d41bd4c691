"""Authentication errors shown to API clients (the key ring's own failures are in ``ring`` and ``services``)."""

from __future__ import annotations

from core.exceptions import AppError


class TokenNotValidError(AppError):
    """A bearer or refresh token was refused; ``reason`` says why in one word, nothing more."""

    code = "token_not_valid"
    message = "The token is not valid."

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(
            message, detail={"reason": reason}, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
        self.reason = reason


class InvalidCredentialsError(AppError):
    code = "invalid_credentials"
    message = "No active account matches these credentials."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})
