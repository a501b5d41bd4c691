"""Rotating JWT_SECRET through the environment keeps users logged in (JWT_SECRET_PREV), until PREV is dropped."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.system.conftest import Gunicorn

pytestmark = pytest.mark.system

SECRET_A = "A" * 16 + "-first-secret-0123456789"
SECRET_B = "B" * 16 + "-second-secret-012345678"


def serve(stack_env: dict[str, str], tmp_path, name: str, **secrets: str) -> Gunicorn:
    env = {key: value for key, value in stack_env.items() if key != "JWT_SECRET_PREV"}
    return Gunicorn({**env, **secrets}, tmp_path / f"{name}.log")


def test_env_rotation_keeps_tokens_valid_then_drop_refuses_them(stack_env, tmp_path) -> None:
    server = serve(stack_env, tmp_path, "a", JWT_SECRET=SECRET_A)
    try:
        name = f"rot{uuid.uuid4().hex[:8]}"
        credentials = {"username": name, "password": "correct horse battery staple"}
        assert (
            requests.post(
                f"{server.url}/api/auth/register/", json={**credentials, "email": f"{name}@example.com"}, timeout=10
            ).status_code
            == 201
        )
        old = requests.post(f"{server.url}/api/auth/token/", json=credentials, timeout=10).json()
    finally:
        server.stop()

    server = serve(stack_env, tmp_path, "b-with-prev", JWT_SECRET=SECRET_B, JWT_SECRET_PREV=SECRET_A)
    try:
        me = requests.get(
            f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {old['access']}"}, timeout=10
        )
        assert me.status_code == 200 and me.json()["username"] == name
        refreshed = requests.post(f"{server.url}/api/auth/token/refresh/", json={"refresh": old["refresh"]}, timeout=10)
        assert refreshed.status_code == 200
        new_access = refreshed.json()["access"]
    finally:
        server.stop()

    server = serve(stack_env, tmp_path, "b-only", JWT_SECRET=SECRET_B)
    try:
        refused = requests.get(
            f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {old['access']}"}, timeout=10
        )
        assert refused.status_code == 401
        assert refused.json()["error"]["detail"] == {"reason": "key_unknown"}
        fresh = requests.get(
            f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {new_access}"}, timeout=10
        )
        assert fresh.status_code == 200
    finally:
        server.stop()
