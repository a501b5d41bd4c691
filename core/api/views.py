"""Django-level error views (``handler400/403/404/500``) and the ``/api/`` catch-all: the envelope for
clients that get JSON (:func:`core.api.responses.wants_json`), Django's own pages for everyone else."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from core.api.responses import error_response, wants_json
from core.exceptions import BadRequestError, InternalError, MethodNotAllowedError, NotFoundError, PermissionDeniedError


# Exempt: otherwise a POST to an unknown /api/ path gets Django's HTML "CSRF verification failed" 403
# instead of the 404 envelope. The view changes nothing, so there is nothing for CSRF to protect.
@csrf_exempt
def api_route_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Catch-all for unknown routes under ``/api/``."""
    return error_response(request, NotFoundError("No API endpoint at this path."))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_json(request):
        return api_route_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if wants_json(request):
        return error_response(request, InternalError())
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_json(request):
        return error_response(request, BadRequestError())
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_json(request):
        return error_response(request, PermissionDeniedError())
    return defaults.permission_denied(request, exception)


def method_not_allowed(request: HttpRequest, *, allowed: tuple[str, ...]) -> HttpResponse:
    """A 405 envelope for plain Django views (DRF views get theirs from the exception handler)."""
    return error_response(request, MethodNotAllowedError.for_method(request.method or "", allowed=allowed))
