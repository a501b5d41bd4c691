"""The README's curl walk-through, over HTTP against gunicorn and the real stack."""

from __future__ import annotations

import re
import uuid

import pytest
import requests

pytestmark = pytest.mark.system


def test_readme_walkthrough_register_to_order(server) -> None:
    # A client that keeps cookies (curl -b/-c) gets read-your-writes across the replica; see the README.
    client = requests.Session()
    base = f"{server.url}/api"
    name = f"walker{uuid.uuid4().hex[:8]}"
    password = "correct horse battery staple"

    registered = client.post(
        f"{base}/auth/register/",
        json={"username": name, "email": f"{name}@example.com", "password": password},
        timeout=10,
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["username"] == name

    tokens = client.post(f"{base}/auth/token/", json={"username": name, "password": password}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    auth = {"Authorization": f"Bearer {tokens.json()['access']}"}

    categories = client.get(f"{base}/categories/", timeout=10).json()
    assert categories["count"] >= 5
    books = client.get(f"{base}/products/", params={"category": "books", "page_size": 5}, timeout=10).json()
    assert books["count"] >= 1 and len(books["results"]) <= 5
    product = books["results"][0]
    assert product["category"]["slug"] == "books"
    one = client.get(f"{base}/products/{product['id']}/", timeout=10)
    assert one.status_code == 200 and one.json()["sku"] == product["sku"]

    added = client.post(
        f"{base}/cart/items/", json={"product_id": product["id"], "quantity": 2}, headers=auth, timeout=10
    )
    assert added.status_code == 201, added.text
    assert added.json()["items"][0]["quantity"] == 2

    key = {"Idempotency-Key": uuid.uuid4().hex}
    order = client.post(f"{base}/orders/", headers={**auth, **key}, timeout=10)
    assert order.status_code == 201, order.text
    assert order.json()["status"] == "pending_payment"
    replay = client.post(f"{base}/orders/", headers={**auth, **key}, timeout=10)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == order.json()["id"]

    mine = client.get(f"{base}/orders/", headers=auth, timeout=10).json()
    assert [o["id"] for o in mine["results"]] == [order.json()["id"]]
    detail = client.get(f"{base}/orders/{order.json()['id']}/", headers=auth, timeout=10)
    assert detail.json()["total"] == order.json()["total"]
    assert client.get(f"{base}/cart/", headers=auth, timeout=10).json()["items"] == []

    stock_before = one.json()["stock"]
    assert client.get(f"{base}/products/{product['id']}/", timeout=10).json()["stock"] == stock_before - 2
    cancelled = client.post(f"{base}/orders/{order.json()['id']}/cancel/", headers=auth, timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"{base}/products/{product['id']}/", timeout=10).json()["stock"] == stock_before

    refreshed = client.post(f"{base}/auth/token/refresh/", json={"refresh": tokens.json()["refresh"]}, timeout=10)
    assert refreshed.status_code == 200
    logout = client.post(f"{base}/auth/logout/", json={"refresh": refreshed.json()["refresh"]}, timeout=10)
    assert logout.status_code == 204


def test_errors_are_json_envelopes_over_http(server) -> None:
    response = requests.get(f"{server.url}/api/no-such-thing/", headers={"X-Request-ID": "sys-test-1"}, timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Request-ID"] == "sys-test-1"
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "No API endpoint at this path.",
        "detail": None,
        "request_id": "sys-test-1",
    }
    oversized = requests.get(f"{server.url}/api/cart/", headers={"Authorization": "Bearer " + "a" * 12000}, timeout=10)
    assert oversized.status_code == 401
    assert oversized.json()["error"]["code"] == "token_not_valid"


def test_swagger_ui_is_served_offline(server) -> None:
    page = requests.get(f"{server.url}/api/docs/", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and not [url for url in assets if url.startswith(("http:", "https:", "//"))]
    bundle = requests.get(
        f"{server.url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", timeout=10
    )
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
