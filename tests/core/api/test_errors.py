from __future__ import annotations

import json

import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import RequestFactory
from rest_framework.test import APIClient

from core.api.exception_handler import render_exception
from core.api.views import server_error
from core.exceptions import AppError
from tests.factories import ProductFactory
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


# unknown routes and wrong methods


@pytest.mark.parametrize(
    "path", ["/api/nope/", "/api/", "/api/products/abc/", "/api/orders/1/refund/", "/api/products"]
)
def test_unknown_api_route_is_not_found_envelope(api_client, path):
    response = api_client.get(path)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_unknown_api_route_with_unsafe_method_is_not_found_envelope_even_with_csrf_checks(method):
    client = APIClient(enforce_csrf_checks=True)
    response = getattr(client, method)("/api/nope/", {"a": 1}, format="json")
    assert_error(response, 404, "not_found")


def test_unknown_route_outside_api_is_not_json(api_client):
    response = api_client.get("/definitely-not-here/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/products/"),
        ("post", "/api/products/"),
        ("put", "/api/categories/"),
        ("get", "/api/auth/token/"),
    ],
)
def test_wrong_method_is_method_not_allowed(api_client, method, path):
    response = getattr(api_client, method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert "Allow" in response


def test_wrong_method_on_protected_route_is_method_not_allowed_when_authenticated(auth_client):
    assert_error(auth_client.put("/api/cart/", {}, format="json"), 405, "method_not_allowed")
    assert_error(auth_client.delete("/api/orders/"), 405, "method_not_allowed")


# malformed bodies


def test_malformed_json_is_parse_error(auth_client):
    response = auth_client.post("/api/cart/items/", data="{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_nan_in_json_is_parse_error(auth_client, product):
    body = f'{{"product_id": {product.id}, "quantity": NaN}}'
    assert_error(auth_client.post("/api/cart/items/", data=body, content_type="application/json"), 400, "parse_error")


def test_non_utf8_body_is_parse_error(api_client, db):
    response = api_client.post("/api/auth/token/", data=b"\xff\xfe{", content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_body_over_upload_limit_is_request_too_large_not_500(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = '{"username": "%s", "password": "x"}' % ("a" * 2048)
    response = api_client.post("/api/auth/token/", data=body, content_type="application/json")
    assert_error(response, 413, "request_too_large")


def test_unexpected_media_type_is_unsupported_media_type(api_client, db):
    response = api_client.post("/api/auth/token/", data="username=a&password=b", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_unsatisfiable_accept_is_not_acceptable_json(api_client, db):
    response = api_client.get("/api/products/", HTTP_ACCEPT="text/html")
    assert_error(response, 406, "not_acceptable")


# X-Request-ID


@pytest.mark.parametrize(
    "path", ["/api/products/", "/api/nope/", "/api/cart/", "/health/live", "/api/docs/", "/api/schema/"]
)
def test_every_response_has_x_request_id(api_client, path):
    response = api_client.get(path)
    assert response["X-Request-ID"]


def test_sane_client_request_id_is_echoed(api_client):
    response = api_client.get("/api/products/", HTTP_X_REQUEST_ID="client-id_1.2:3")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "client-id_1.2:3"


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "semi;colon", "<script>"])
def test_insane_client_request_id_is_replaced(api_client, offered):
    response = api_client.get("/api/products/", HTTP_X_REQUEST_ID=offered)
    assert response["X-Request-ID"]
    assert response["X-Request-ID"] != offered


def test_error_request_id_equals_echoed_header(api_client):
    response = api_client.get("/api/nope/", HTTP_X_REQUEST_ID="trace-me-42")
    assert assert_error(response, 404, "not_found")["request_id"] == "trace-me-42"
    response = api_client.get("/api/cart/", HTTP_X_REQUEST_ID="trace-me-43")
    assert assert_error(response, 401, "not_authenticated")["request_id"] == "trace-me-43"


def test_request_ids_differ_between_requests(api_client):
    assert api_client.get("/api/products/")["X-Request-ID"] != api_client.get("/api/products/")["X-Request-ID"]


# the renderer itself


def test_unexpected_exception_renders_500_envelope_without_trace():
    request = RequestFactory().get("/api/products/")
    request.request_id = "req-500"
    response = render_exception(RuntimeError("secret detail"), request)
    assert response.status_code == 500
    assert json.loads(response.content) == {
        "error": {
            "code": "internal_error",
            "message": "An unexpected error occurred; it has been logged.",
            "detail": None,
            "request_id": "req-500",
        }
    }
    assert b"secret detail" not in response.content


def test_app_error_renders_code_status_detail_and_headers():
    class BusyError(AppError):
        code = "dependency_unavailable"

    request = RequestFactory().get("/api/")
    response = render_exception(BusyError("short and stout", detail={"x": 1}, headers={"Retry-After": "3"}), request)
    assert response.status_code == 503
    body = json.loads(response.content)["error"]
    assert body["code"] == "dependency_unavailable"
    assert body["message"] == "short and stout"
    assert body["detail"] == {"x": 1}
    assert response["Retry-After"] == "3"


def test_an_error_class_with_an_unlisted_code_fails_at_definition():
    with pytest.raises(TypeError, match="teapot"):

        class TeapotError(AppError):
            code = "teapot"


def test_suspicious_operation_renders_400_bad_request_not_500():
    request = RequestFactory().post("/api/auth/token/")
    request.request_id = "req-400"
    response = render_exception(SuspiciousOperation("too many fields"), request)
    assert response.status_code == 400
    body = json.loads(response.content)["error"]
    assert body["code"] == "bad_request"
    assert body["request_id"] == "req-400"


def test_django_server_error_view_answers_api_clients_with_json():
    request = RequestFactory().get("/api/orders/")
    response = server_error(request)
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert b'"internal_error"' in response.content


def test_error_responses_never_leak_html(api_client):
    ProductFactory()
    for response in (api_client.get("/api/nope/"), api_client.delete("/api/products/"), api_client.get("/api/cart/")):
        assert b"<html" not in response.content.lower()


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 5_000 + "1" + "}" * 5_000])
def test_deeply_nested_json_is_parse_error_not_500(api_client, db, body):
    response = api_client.post("/api/auth/token/", body, content_type="application/json")
    assert_error(response, 400, "parse_error")
