"""Every exception an API client can meet, mapped to an :class:`~core.exceptions.AppError` and rendered once.

DRF views reach it through ``EXCEPTION_HANDLER``; Django-level failures (unknown route, handler400/403/404/500)
through :mod:`core.api.views`; middleware calls :func:`core.api.responses.error_response` directly. An
unexpected exception is logged with its traceback and answered as a 500 ``internal_error`` envelope: the
client never sees a trace.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.views import set_rollback

from core.api.responses import error_response
from core.exceptions import (
    AppError,
    BadRequestError,
    FieldValidationError,
    InternalError,
    MethodNotAllowedError,
    NotAcceptableError,
    NotAuthenticatedError,
    NotFoundError,
    ParseFailedError,
    PermissionDeniedError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)

logger = logging.getLogger(__name__)


def _drf_message(exc: drf.APIException) -> str | None:
    """DRF's own message when it is one string (the error class's default otherwise)."""
    return str(exc.detail) if isinstance(exc.detail, str) else None


def _validation_detail(exc: drf.ValidationError) -> Any:
    if isinstance(exc.detail, list):  # raised without a field: report it as non_field_errors
        return {"non_field_errors": [str(item) for item in exc.detail]}
    return exc.detail


def _from_drf(exc: drf.APIException) -> AppError | None:
    message = _drf_message(exc)
    if isinstance(exc, drf.ValidationError):
        return FieldValidationError(_validation_detail(exc), message)
    if isinstance(exc, drf.ParseError):
        return ParseFailedError(message)
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return NotAuthenticatedError(message)
    if isinstance(exc, drf.PermissionDenied):
        return PermissionDeniedError(message)
    if isinstance(exc, drf.NotFound):
        return NotFoundError(message)
    if isinstance(exc, drf.MethodNotAllowed):
        return MethodNotAllowedError(message)  # DRF's finalize_response adds Allow
    if isinstance(exc, drf.NotAcceptable):
        return NotAcceptableError(message)
    if isinstance(exc, drf.UnsupportedMediaType):
        return UnsupportedMediaTypeError(message)
    return None


def exception_to_error(exc: Exception) -> AppError:
    """The AppError an exception is shown to the client as (``internal_error`` for anything unexpected)."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, Http404):
        return NotFoundError()
    if isinstance(exc, DjangoPermissionDenied):
        return PermissionDeniedError()
    # Django raises these while DRF reads the body (over DATA_UPLOAD_MAX_MEMORY_SIZE, ...): the client's
    # fault, answered the way Django's own handler400 would, never as a 500.
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLargeError()
    if isinstance(exc, SuspiciousOperation):
        logger.warning("suspicious request refused: %s", exc)
        return BadRequestError()
    if isinstance(exc, drf.APIException):
        error = _from_drf(exc)
        if error is not None:
            return error
    logger.exception("unhandled error while serving the request", exc_info=exc)
    return InternalError()


def render_exception(exc: Exception, request: HttpRequest) -> HttpResponse:
    """Any exception as the error envelope (logging the unexpected ones)."""
    return error_response(request, exception_to_error(exc))


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF ``EXCEPTION_HANDLER``: every API error leaves through here.

    A database failure that is not an AppError is let through (None): the database middleware decides
    whether to run the request again on another node or to answer 503.
    """
    if isinstance(exc, DatabaseError) and not isinstance(exc, AppError):
        return None
    set_rollback()
    request = context["request"]
    return render_exception(exc, getattr(request, "_request", request))
