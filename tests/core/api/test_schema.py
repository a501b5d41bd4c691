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


# Every constraint the API enforces, and every status it can answer, is in the schema (docs/schema_conformance.md)


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/api/"):
                yield path, method, operation


def _parameter(schema: dict, path: str, method: str, name: str) -> dict:
    [parameter] = [p for p in schema["paths"][path][method].get("parameters", []) if p["name"] == name]
    return parameter


def test_every_operation_documents_the_statuses_the_shared_machinery_can_answer(schema):
    for path, method, operation in _operations(schema):
        statuses = set(operation["responses"])
        assert {"400", "406", "429", "500", "503"} <= statuses, (method, path, statuses)
        if "requestBody" in operation:
            assert {"413", "415"} <= statuses, (method, path)
        if method != "get":
            assert "413" in statuses, (method, path)
            assert "read_only_mode" in operation["responses"]["503"]["description"], (method, path)
        if any("bearerAuth" in requirement for requirement in operation["security"]):
            assert "token_not_valid" in operation["responses"]["401"]["description"], (method, path)
        assert "Retry-After" in operation["responses"]["503"]["headers"], (method, path)


def test_public_operations_document_401_for_a_bad_token_and_protected_ones_for_none(schema):
    products = schema["paths"]["/api/products/"]["get"]["responses"]["401"]["description"]
    assert "token_not_valid" in products and "not_authenticated" not in products
    cart = schema["paths"]["/api/cart/"]["get"]["responses"]["401"]["description"]
    assert "token_not_valid" in cart and "not_authenticated" in cart and "invalid_credentials" not in cart
    login = schema["paths"]["/api/auth/token/"]["post"]["responses"]["401"]["description"]
    assert login.startswith("invalid_credentials:") and "token_not_valid" not in login


def test_request_bodies_refuse_unknown_properties(schema):
    for path, method, operation in _operations(schema):
        if "requestBody" in operation:
            body = _resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])
            assert body["additionalProperties"] is False, (method, path)


def test_checkout_documents_an_optional_empty_body(schema):
    body = schema["paths"]["/api/orders/"]["post"]["requestBody"]
    assert not body.get("required")
    assert body["content"]["application/json"]["schema"]["properties"] == {}


def test_string_properties_state_their_lengths_and_patterns(schema):
    register = _resolve(schema, {"$ref": "#/components/schemas/RegisterApiInputRequest"})["properties"]
    assert register["username"]["maxLength"] == 150
    assert register["email"]["maxLength"] == 254 and register["email"]["format"] == "email"
    assert register["password"]["minLength"] == 8 and register["password"]["maxLength"] == 128
    login = _resolve(schema, {"$ref": "#/components/schemas/TokenObtainApiInputRequest"})["properties"]
    assert login["username"]["maxLength"] == 150 and login["password"]["maxLength"] == 128
    quantity = _resolve(schema, {"$ref": "#/components/schemas/CartItemApiInputRequest"})
    assert quantity["required"] == ["quantity"]  # PATCH validates the whole body: quantity is required
    assert (quantity["properties"]["quantity"]["minimum"], quantity["properties"]["quantity"]["maximum"]) == (1, 1000)


def test_query_and_path_parameters_state_their_ranges(schema):
    q = _parameter(schema, "/api/products/", "get", "q")["schema"]
    assert q["maxLength"] == 200
    category = _parameter(schema, "/api/products/", "get", "category")["schema"]
    assert category["maxLength"] == 120 and category["pattern"] == "^(?:[-a-zA-Z0-9_]*)?$"  # empty: no filter
    for path in ("/api/products/", "/api/categories/", "/api/orders/"):
        assert _parameter(schema, path, "get", "page")["schema"]["minimum"] == 1
        page_size = _parameter(schema, path, "get", "page_size")["schema"]
        assert (page_size["minimum"], page_size["maximum"]) == (1, 100)
    for path, method, name in [
        ("/api/products/{product_id}/", "get", "product_id"),
        ("/api/cart/items/{item_id}/", "patch", "item_id"),
        ("/api/orders/{order_id}/", "get", "order_id"),
        ("/api/orders/{order_id}/cancel/", "post", "order_id"),
    ]:
        id_schema = _parameter(schema, path, method, name)["schema"]
        assert (id_schema["minimum"], id_schema["maximum"]) == (1, 2**63 - 1), (path, name)
    key = _parameter(schema, "/api/orders/", "post", "Idempotency-Key")
    assert key["in"] == "header" and not key.get("required")
    key_schema = key["schema"]
    assert (key_schema["minLength"], key_schema["maxLength"], key_schema["pattern"]) == (1, 255, "^[!-~]{1,255}$")


def test_every_pattern_means_the_same_in_python_and_in_ecma_262(schema):
    """OpenAPI reads patterns as ECMA-262 (Schemathesis validates with it), the server and Hypothesis as Python:
    no ``\\w``, ``\\d`` or ``\\s``, whose meanings differ, and each one compiles in both."""
    import jsonschema_rs

    def patterns(node):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            for value in node.values():
                yield from patterns(value)
        elif isinstance(node, list):
            for value in node:
                yield from patterns(value)

    found = set(patterns(schema["paths"])) | set(patterns(schema["components"]))
    request_patterns = {p for p in found if "\\u0000" in p or "!-~" in p or "A-Za-z" in p or "a-zA-Z" in p}
    assert len(request_patterns) >= 5, found
    for pattern in found:
        re.compile(pattern)
        jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    for pattern in request_patterns:
        assert not re.search(r"\\[wds]", pattern.replace("\\\\", "")), pattern


@pytest.mark.parametrize(("username", "email"), [("zoë", "zoe@correo.españa"), ("ana", "")])
def test_user_output_conforms_to_its_schema_for_every_stored_account(schema, username, email):
    """The non-conforming response Schemathesis found: an account named "zoë" (made before sign-ups were ASCII, or
    by an operator) or with an internationalised e-mail, read back, against the schema as ECMA-262 reads it."""
    import jsonschema_rs

    from tests.conftest import client_for
    from tests.factories import UserFactory

    user = UserFactory(username=username, email=email)
    response = client_for(user).get("/api/auth/me/")
    assert response.status_code == 200
    component = _resolve(schema, {"$ref": "#/components/schemas/UserOutput"})
    validator = jsonschema_rs.validator_for(component, validate_formats=True)
    assert validator.is_valid(response.json()), list(validator.iter_errors(response.json()))
