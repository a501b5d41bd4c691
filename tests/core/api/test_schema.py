"""The OpenAPI document (/api/schema/) and the offline Swagger UI (/api/docs/)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db

API_PATHS = {
    "/api/auth/register/": {"post"},
    "/api/auth/token/": {"post"},
    "/api/auth/token/refresh/": {"post"},
    "/api/auth/logout/": {"post"},
    "/api/auth/me/": {"get"},
    "/api/categories/": {"get"},
    "/api/products/": {"get"},
    "/api/products/{product_id}/": {"get"},
    "/api/cart/": {"get"},
    "/api/cart/items/": {"post"},
    "/api/cart/items/{item_id}/": {"patch", "delete"},
    "/api/orders/": {"get", "post"},
    "/api/orders/{order_id}/": {"get"},
    "/api/orders/{order_id}/cancel/": {"post"},
}


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    return response.json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _request_properties(schema: dict, path: str, method: str) -> set[str]:
    content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    return set(_resolve(schema, content["schema"])["properties"])


def test_schema_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Bulwark API"


def test_schema_is_served_as_json_by_accept_header(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_schema_is_public_without_token(api_client):
    assert api_client.get("/api/schema/").status_code == 200


def test_schema_lists_every_api_path_and_method(schema):
    for path, methods in API_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_schema_documents_checkout_responses(schema):
    responses = schema["paths"]["/api/orders/"]["post"]["responses"]
    assert {"201", "400", "401", "409", "422"} <= set(responses)
    created = _resolve(schema, responses["201"]["content"]["application/json"]["schema"])
    assert {"id", "status", "items", "total", "currency", "created_at"} <= set(created["properties"])
    parameters = schema["paths"]["/api/orders/"]["post"].get("parameters", [])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in parameters)


def test_schema_documents_error_envelope(schema):
    response = schema["paths"]["/api/orders/"]["post"]["responses"]["409"]
    envelope = _resolve(schema, response["content"]["application/json"]["schema"])
    error = _resolve(schema, envelope["properties"]["error"])
    assert {"code", "message", "detail", "request_id"} <= set(error["properties"])


@pytest.mark.parametrize(
    ("path", "method", "fields"),
    [
        ("/api/auth/register/", "post", {"username", "email", "password"}),
        ("/api/auth/token/", "post", {"username", "password"}),
        ("/api/auth/token/refresh/", "post", {"refresh"}),
        ("/api/cart/items/", "post", {"product_id", "quantity"}),
        ("/api/cart/items/{item_id}/", "patch", {"quantity"}),
    ],
)
def test_schema_request_bodies_name_each_endpoints_own_fields(schema, path, method, fields):
    assert _request_properties(schema, path, method) == fields


def test_schema_documents_bearer_authentication(schema):
    schemes = schema["components"]["securitySchemes"]
    [bearer_name] = [name for name, scheme in schemes.items() if scheme.get("scheme") == "bearer"]
    assert schemes[bearer_name]["type"] == "http"
    assert {bearer_name: []} in schema["paths"]["/api/orders/"]["post"]["security"]
    assert {bearer_name: []} in schema["paths"]["/api/auth/me/"]["get"]["security"]
    assert {} in schema["paths"]["/api/products/"]["get"]["security"]  # anonymous allowed


# Swagger UI


def test_docs_page_is_html_using_local_swagger_assets(api_client):
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger-ui" in html.lower()
    assert not re.search(r"https?://", html), "the docs page must not load anything from a CDN"
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert any(src.endswith("swagger-ui-bundle.js") for src in scripts)
    assert all(src.startswith("/static/drf_spectacular_sidecar/") for src in scripts)
    assert "/api/schema/" in html


def test_docs_assets_are_served(api_client):
    html = api_client.get("/api/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    assert any(asset.endswith(".css") for asset in assets)
    for asset in assets:
        response = api_client.get(asset)
        assert response.status_code == 200, asset
        assert response["X-Request-ID"]
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, asset
    bundle = next(asset for asset in assets if asset.endswith("swagger-ui-bundle.js"))
    assert "javascript" in api_client.get(bundle)["Content-Type"]


@pytest.mark.parametrize("path", ["/api/products/", "/api/categories/", "/api/orders/"])
def test_schema_documents_lists_as_pages(schema, path):
    content = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    page = _resolve(schema, content["schema"])
    assert page["type"] == "object"
    assert {"count", "next", "previous", "results"} <= set(page["properties"])
    assert page["properties"]["results"]["type"] == "array"
    parameters = [(p["name"], p["in"]) for p in schema["paths"][path]["get"].get("parameters", [])]
    assert ("page", "query") in parameters
    assert ("page_size", "query") in parameters
    assert len(parameters) == len(set(parameters))


def test_error_envelope_code_is_an_enum_of_the_listed_codes(schema):
    from core.exceptions import ERROR_CODES

    body = _resolve(schema, schema["components"]["schemas"]["ErrorBody"])
    code = body["properties"]["code"]
    code = code["allOf"][0] if "allOf" in code else code  # drf-spectacular wraps an enum with a description
    assert _resolve(schema, code)["enum"] == [entry.code for entry in ERROR_CODES]


def test_documented_error_statuses_name_only_codes_of_that_status(schema):
    from core.exceptions import CODES

    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                named = re.findall(r"(?:^|; )([a-z_]+):", response["description"])
                assert named, f"{method} {path} {status} names no error code"
                assert all(CODES[code].http_status == int(status) for code in named), (method, path, status)
