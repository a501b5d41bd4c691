"""The one exception hierarchy and the one list of error codes. In app code, just raise.

Every error an API client can see has a stable snake_case ``code`` listed in :data:`ERROR_CODES` with its
HTTP status and meaning; the OpenAPI error schema and the README's list of codes are generated from it. An
``AppError`` subclass names its ``code`` and takes its ``http_status`` from that list, so a code cannot
answer two statuses, and a subclass with a code not in the list fails at import time.

This module holds the codes of every layer (like Zulip's ``ErrorCode``) and the errors that are neither
shop nor resilience; each area defines its own ``AppError`` subclasses in its ``exceptions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    meaning: str


ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("validation_error", 400, "A field is invalid; `detail` is `{field: [messages]}`."),
    ErrorCode("parse_error", 400, "The body is not valid JSON."),
    ErrorCode("bad_request", 400, "The request is malformed (e.g. too many fields, a bad header)."),
    ErrorCode("cart_empty", 400, "Checkout of an empty cart."),
    ErrorCode("not_authenticated", 401, "No bearer token was sent (`WWW-Authenticate: Bearer`)."),
    ErrorCode("invalid_credentials", 401, "No active account matches the username and password."),
    ErrorCode(
        "token_not_valid",
        401,
        "The token was refused; `detail.reason` says why (`expired`, `key_retired`, `key_revoked`, "
        "`key_unknown`, `malformed`, `wrong_type`, `blacklisted`, `logged_out`...).",
    ),
    ErrorCode("permission_denied", 403, "Authenticated, but not allowed to do this."),
    ErrorCode("not_found", 404, "No such resource, or no API endpoint at this path."),
    ErrorCode("method_not_allowed", 405, "The path does not take this method; `Allow` lists those it takes."),
    ErrorCode("not_acceptable", 406, "The `Accept` header asks for a format other than JSON."),
    ErrorCode("out_of_stock", 409, "Not enough stock; `detail.items` is `[{product_id, sku, requested, available}]`."),
    ErrorCode("order_not_cancellable", 409, "Only a `pending_payment` order can be cancelled."),
    ErrorCode("request_too_large", 413, "The body is larger than the server accepts."),
    ErrorCode("uri_too_long", 414, "The request line (method, path, query string) is longer than the server accepts."),
    ErrorCode("unsupported_media_type", 415, "The body is not `application/json`."),
    ErrorCode("idempotency_key_mismatch", 422, "The `Idempotency-Key` was used before with another body."),
    ErrorCode("rate_limited", 429, "Over a rate limit; `Retry-After` and `RateLimit-*` say when to come back."),
    ErrorCode(
        "headers_too_large",
        431,
        "The headers are too many or too large; `detail.reason` is `too_many`, `header_too_large` "
        "(`detail.header` names it) or `total_too_large`.",
    ),
    ErrorCode("internal_error", 500, "A bug on our side; it has been logged (`request_id` identifies it)."),
    ErrorCode("read_only_mode", 503, "Writes are refused for now (primary down or maintenance); reads work."),
    ErrorCode("dependency_unavailable", 503, "A service this request needs is down; retry after `Retry-After`."),
    ErrorCode(
        "overloaded",
        503,
        "This traffic class is at its concurrency limit on this server (`X-Traffic-Class` names it); retry after "
        "`Retry-After`.",
    ),
    ErrorCode(
        "outcome_unknown",
        503,
        "A write was cut off after it was sent (the database stopped answering): it may have committed. Read the "
        "resource again; a checkout retried with the same `Idempotency-Key` answers what happened.",
    ),
    ErrorCode(
        "request_timeout",
        504,
        "The request ran out of its time budget; its database work was cut off and rolled back. Safe to retry a "
        "read; retry a checkout with the same `Idempotency-Key`.",
    ),
)
CODES: dict[str, ErrorCode] = {entry.code: entry for entry in ERROR_CODES}


def codes_for_status(http_status: int) -> list[str]:
    """The codes that answer this HTTP status, in list order."""
    return [entry.code for entry in ERROR_CODES if entry.http_status == http_status]


class AppError(Exception):
    """Base of every error Bulwark shows to an API client: a listed ``code``, a message, ``detail``, headers."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    message: str = "The request could not be processed."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = CODES.get(cls.code)
        if entry is None:
            raise TypeError(f"{cls.__qualname__}.code {cls.code!r} is not listed in core.exceptions.ERROR_CODES")
        cls.http_status = entry.http_status

    def __init__(
        self, message: str | None = None, *, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.message = message or self.message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)


class FieldValidationError(AppError):
    """A request field is invalid (also one only the service can tell: unknown product, taken username)."""

    code = "validation_error"
    message = "The request has invalid fields; see detail."

    def __init__(self, errors: dict[str, list[str]], message: str | None = None) -> None:
        super().__init__(message, detail=errors)


class ParseFailedError(AppError):
    code = "parse_error"
    message = "The request body is not valid JSON."


class BadRequestError(AppError):
    code = "bad_request"
    message = "The request is malformed."


class NotAuthenticatedError(AppError):
    code = "not_authenticated"
    message = "Authentication credentials were not provided."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(AppError):
    code = "permission_denied"
    message = "You may not do this."


class NotFoundError(AppError):
    code = "not_found"
    message = "Not found."


class MethodNotAllowedError(AppError):
    code = "method_not_allowed"
    message = "This method is not allowed here."

    def __init__(self, message: str | None = None, *, allowed: tuple[str, ...] | None = None) -> None:
        super().__init__(message, headers={"Allow": ", ".join(allowed)} if allowed else None)

    @classmethod
    def for_method(cls, method: str, *, allowed: tuple[str, ...]) -> MethodNotAllowedError:
        return cls(f'Method "{method}" not allowed.', allowed=allowed)


class NotAcceptableError(AppError):
    code = "not_acceptable"
    message = "Could not satisfy the request Accept header."


class RequestTooLargeError(AppError):
    code = "request_too_large"
    message = "The request body is too large."


class UriTooLongError(AppError):
    code = "uri_too_long"
    message = "The request line is too long; send fewer or shorter query parameters."


class HeadersTooLargeError(AppError):
    code = "headers_too_large"
    message = "The request headers are too large or too many."


class UnsupportedMediaTypeError(AppError):
    code = "unsupported_media_type"
    message = "Send the body as application/json."


class InternalError(AppError):
    code = "internal_error"
    message = "An unexpected error occurred; it has been logged."


class DependencyUnavailableError(AppError):
    code = "dependency_unavailable"
    message = "A service this request needs is unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
