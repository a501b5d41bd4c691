"""The schema documents the 429 and the rate-limit headers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

LIMITED = [
    ("/api/auth/token/", "post"),
    ("/api/auth/register/", "post"),
    ("/api/auth/token/refresh/", "post"),
    ("/api/orders/", "post"),
]


@pytest.fixture
def schema(api_client) -> dict:
    return api_client.get("/api/schema/", {"format": "json"}).json()


@pytest.mark.parametrize(("path", "method"), LIMITED)
def test_limited_routes_document_429_with_the_envelope_and_headers(schema, path, method) -> None:
    refused = schema["paths"][path][method]["responses"]["429"]
    assert "rate_limited" in refused["description"]
    ref = refused["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"]
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(refused["headers"])


def test_every_api_operation_documents_the_global_limit(schema) -> None:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "429" in operation["responses"], (path, method)
            ok = [r for status, r in operation["responses"].items() if status.startswith("2")]
            assert all("RateLimit-Remaining" in r.get("headers", {}) for r in ok), (path, method)
