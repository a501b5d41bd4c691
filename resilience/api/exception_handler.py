"""The one place that turns exceptions into the API error envelope.

``{"error": {"code", "message", "detail", "request_id"}}`` with a stable ``code``. DRF views reach
it through ``EXCEPTION_HANDLER``; Django-level failures under ``/api/`` (unknown route, an
exception outside DRF) reach it through :mod:`resilience.api.views`. An unexpected exception is
logged with its traceback and answered as a 500 envelope: the client never sees a trace.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404, HttpRequest
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

from resilience.errors import AppError
from resilience.observability.request_id import request_id_for

logger = logging.getLogger(__name__)

# DRF exception class -> (stable code, message shown when DRF's own is too vague)
_DRF_CODES: list[tuple[type[drf.APIException], str]] = [
    (drf.ParseError, "parse_error"),
    (drf.ValidationError, "validation_error"),
    (drf.NotAuthenticated, "not_authenticated"),
    (drf.AuthenticationFailed, "not_authenticated"),
    (drf.PermissionDenied, "permission_denied"),
    (drf.NotFound, "not_found"),
    (drf.MethodNotAllowed, "method_not_allowed"),
    (drf.NotAcceptable, "not_acceptable"),
    (drf.UnsupportedMediaType, "unsupported_media_type"),
    (drf.Throttled, "rate_limited"),
]


def error_body(request: HttpRequest | None, code: str, message: str, detail: Any = None) -> dict[str, Any]:
    request_id = request_id_for(request) if request is not None else None
    return {"error": {"code": code, "message": message, "detail": detail, "request_id": request_id}}


def _message(exc: drf.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, str):
        return str(detail)
    if isinstance(exc, drf.ValidationError):
        return "The request has invalid fields; see detail."
    return str(exc.default_detail)


def _drf_detail(exc: drf.APIException) -> Any:
    if isinstance(exc, drf.ValidationError):
        detail = exc.detail
        if isinstance(detail, list):  # raised without a field: report it as non_field_errors
            return {"non_field_errors": [str(item) for item in detail]}
        return detail
    return None


def render_exception(exc: Exception, request: HttpRequest | None) -> Response:
    """Render any exception as the error envelope (logging the unexpected ones)."""
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()

    if isinstance(exc, AppError):
        response = Response(error_body(request, exc.code, exc.message, exc.detail), status=exc.http_status)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    # Django raises these while DRF reads the body (over DATA_UPLOAD_MAX_MEMORY_SIZE, ...): the client's
    # fault, answered the way Django's own handler400 would, never as a 500.
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(request, "request_too_large", "The request body is too large."), status=413)
    if isinstance(exc, SuspiciousOperation):
        logger.warning("suspicious request refused: %s", exc)
        return Response(error_body(request, "bad_request", "The request is malformed."), status=400)

    if isinstance(exc, drf.APIException):
        code = next((code for cls, code in _DRF_CODES if isinstance(exc, cls)), "error")
        response = Response(error_body(request, code, _message(exc), _drf_detail(exc)), status=exc.status_code)
        if isinstance(exc, drf.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
            response["WWW-Authenticate"] = "Bearer"
        return response

    logger.exception("unhandled error while serving the request", exc_info=exc)
    return Response(
        error_body(request, "internal_error", "An unexpected error occurred; it has been logged."), status=500
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every API error leaves through here.

    A database failure that is not an AppError is let through (None): the database middleware decides
    whether to run the request again on another node or to answer 503.
    """
    if isinstance(exc, DatabaseError) and not isinstance(exc, AppError):
        return None
    set_rollback()
    request = context.get("request")
    django_request = getattr(request, "_request", request)
    return render_exception(exc, django_request)
