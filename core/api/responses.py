"""The one error renderer: ``error_response(request, error)``, and the one rule for who gets JSON.

Every view, exception handler and middleware answers an error through :func:`error_response`, so the
envelope ``{"error": {"code", "message", "detail", "request_id"}}`` and its headers are built in one place.
The body is encoded by DRF's ``JSONRenderer``, byte for byte as a DRF ``Response`` would be.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from rest_framework.renderers import JSONRenderer

from core.exceptions import AppError
from core.request_id import request_id_for

# Paths whose every answer is JSON, whatever the client's Accept header says.
JSON_PATH_PREFIXES = ("/api/", "/health", "/metrics", "/.well-known/")
_renderer = JSONRenderer()


def wants_json(request: HttpRequest) -> bool:
    """JSON for the API, probe and well-known paths, and for a client that asks for JSON and not for HTML."""
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


def error_body(request: HttpRequest | None, error: AppError) -> dict[str, Any]:
    request_id = request_id_for(request) if request is not None else None
    return {"error": {"code": error.code, "message": error.message, "detail": error.detail, "request_id": request_id}}


def error_response(request: HttpRequest, error: AppError) -> HttpResponse:
    """The error as the JSON envelope (or its message as plain text for a browser outside the API)."""
    if wants_json(request):
        response = HttpResponse(
            _renderer.render(error_body(request, error)), status=error.http_status, content_type="application/json"
        )
    else:
        response = HttpResponse(error.message, status=error.http_status, content_type="text/plain; charset=utf-8")
    for name, value in error.headers.items():
        response[name] = value
    return response
