"""Django-level error views that answer ``/api/`` clients with the JSON envelope, never HTML."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from resilience.api.exception_handler import error_body


# Exempt: otherwise a POST to an unknown /api/ path gets Django's HTML "CSRF verification failed" 403
# instead of the 404 envelope. The view changes nothing, so there is nothing for CSRF to protect.
@csrf_exempt
def api_route_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Catch-all for unknown routes under ``/api/``."""
    return JsonResponse(error_body(request, "not_found", "No API endpoint at this path."), status=404)


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/health", "/metrics", "/.well-known/"))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return api_route_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        body = error_body(request, "internal_error", "An unexpected error occurred; it has been logged.")
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body(request, "bad_request", "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body(request, "permission_denied", "You may not do this."), status=403)
    return defaults.permission_denied(request, exception)


def method_not_allowed(request: HttpRequest, *, allowed: tuple[str, ...]) -> JsonResponse:
    """A 405 envelope for plain Django views (DRF views get theirs from the exception handler)."""
    body = error_body(request, "method_not_allowed", f'Method "{request.method}" not allowed.')
    response = JsonResponse(body, status=405)
    response["Allow"] = ", ".join(allowed)
    return response
