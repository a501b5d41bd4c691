"""The rate-limit error an API client sees (429 with ``Retry-After`` and ``RateLimit-*``)."""

from __future__ import annotations

from core.exceptions import AppError


class RateLimitedError(AppError):
    """Over a rate limit: ``Retry-After`` and the ``RateLimit-*`` headers say when to come back."""

    code = "rate_limited"
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
