"""The one error renderer and the one rule for who gets JSON."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from core.api.responses import error_response, wants_json
from core.exceptions import DependencyUnavailableError, MethodNotAllowedError, NotFoundError

factory = RequestFactory()


@pytest.mark.parametrize(
    ("path", "accept", "expected"),
    [
        ("/api/products/", "text/html", True),
        ("/health", "", True),
        ("/health/live", "text/html", True),
        ("/metrics", "", True),
        ("/.well-known/jwks.json", "", True),
        ("/admin/", "text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("/admin/", "application/json", True),
        ("/admin/", "", False),
        ("/elsewhere/", "text/html, application/json", False),
    ],
)
def test_who_gets_json(path, accept, expected):
    assert wants_json(factory.get(path, HTTP_ACCEPT=accept)) is expected


def test_envelope_carries_code_message_detail_request_id_and_headers():
    request = factory.get("/api/orders/")
    request.request_id = "rid-1"
    response = error_response(request, DependencyUnavailableError("down", retry_after=7))
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "7"
    assert json.loads(response.content) == {
        "error": {"code": "dependency_unavailable", "message": "down", "detail": None, "request_id": "rid-1"}
    }


def test_body_is_encoded_as_drf_encodes_it():
    request = factory.get("/api/x/")
    request.request_id = "r"
    response = error_response(request, NotFoundError("naïve"))
    assert (
        response.content == '{"error":{"code":"not_found","message":"naïve","detail":null,"request_id":"r"}}'.encode()
    )


def test_a_browser_outside_the_api_gets_the_message_as_text():
    response = error_response(factory.get("/admin/", HTTP_ACCEPT="text/html"), DependencyUnavailableError())
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == DependencyUnavailableError.message
    assert response["Retry-After"] == "5"


def test_method_not_allowed_lists_the_allowed_methods():
    request = factory.post("/health/live")
    response = error_response(request, MethodNotAllowedError.for_method("POST", allowed=("GET", "HEAD")))
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert json.loads(response.content)["error"]["message"] == 'Method "POST" not allowed.'
