"""Oversized tokens through real gunicorn: its header limit (32 KiB) lets them reach Bulwark's own 8 KB check; a
body over the auth class's limit (16 KiB) is refused before it is read."""

from __future__ import annotations

import base64
import json

import pytest
import requests

pytestmark = pytest.mark.system


def oversized_token(size: int) -> str:
    """A well-formed-looking JWT of about ``size`` characters (the payload padded)."""

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header = b64({"alg": "HS256", "typ": "JWT", "kid": "env-0000000000000000"})
    payload = b64({"user_id": 1, "pad": "x" * size})
    return f"{header}.{payload}.c2lnbmF0dXJl"


@pytest.mark.parametrize("size", [9_000, 20_000])
def test_an_oversized_bearer_token_is_a_json_401_too_large(server, size) -> None:
    token = oversized_token(size)
    assert len(token) > 8192
    response = requests.get(f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 401, response.text[:300]
    error = response.json()["error"]
    assert (error["code"], error["detail"]) == ("token_not_valid", {"reason": "too_large"})


def test_an_oversized_refresh_token_is_a_json_401_too_large(server) -> None:
    token = oversized_token(9_000)  # over the 8 KB token check, within the auth class's 16 KiB body limit
    response = requests.post(f"{server.url}/api/auth/token/refresh/", json={"refresh": token}, timeout=10)
    assert response.status_code == 401, response.text[:300]
    assert response.json()["error"]["detail"] == {"reason": "too_large"}


def test_a_refresh_body_over_the_auth_body_limit_is_a_json_413(server) -> None:
    token = oversized_token(40_000)
    response = requests.post(f"{server.url}/api/auth/token/refresh/", json={"refresh": token}, timeout=10)
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and error["detail"]["limit"] == 16 * 1024
    assert response.headers["X-Traffic-Class"] == "auth"
