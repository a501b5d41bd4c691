"""Environment signing keys: kid on every token, verification by kid only, JWT_SECRET_PREV still verifies."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.exceptions import TokenBackendError

from resilience.auth.backend import KeyedTokenBackend, KeyRejectedError
from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.keys import kid_for_secret, ring_build
from resilience.auth.ring import ring_cache
from resilience.auth.tokens import KeyedAccessToken, KeyedRefreshToken, access_decode
from resilience.config import load_config

SECRET_A = "A" * 16 + "-first-secret-0123456789"
SECRET_B = "B" * 16 + "-second-secret-012345678"
BASE = {"SECRET_KEY": "k" * 45 + "abcde", "DATABASE_URL": "postgres://u:p@h/d", "DJANGO_ENV": "development"}
CLAIMS = {"user_id": 1, "exp": 4_000_000_000, "iat": 1_700_000_000, "jti": "j", "token_type": "access"}

pytestmark = pytest.mark.django_db


def backend_for(**env: str) -> KeyedTokenBackend:
    """The backend with this process's configuration swapped for these environment keys."""
    config = load_config({**BASE, **env})
    settings.BULWARK_CONFIG = dataclasses.replace(
        settings.BULWARK_CONFIG, jwt_secret=config.jwt_secret, jwt_secret_prev=config.jwt_secret_prev
    )
    ring_cache.reset()
    return KeyedTokenBackend()


@pytest.fixture(autouse=True)
def _restore_config():
    original = settings.BULWARK_CONFIG
    yield
    settings.BULWARK_CONFIG = original
    ring_cache.reset()


def test_kid_is_deterministic_distinct_and_reveals_nothing() -> None:
    assert kid_for_secret(SECRET_A) == kid_for_secret(SECRET_A)
    assert kid_for_secret(SECRET_A) != kid_for_secret(SECRET_B)
    ring = ring_build(jwt_secret=SECRET_A, jwt_secret_prev=SECRET_B, stored=[], delay=timedelta(days=7))
    assert SECRET_A not in repr(ring) and SECRET_B not in repr(ring)


def test_tokens_carry_the_active_kid() -> None:
    backend = backend_for(JWT_SECRET=SECRET_B, JWT_SECRET_PREV=SECRET_A)
    token = backend.encode(CLAIMS)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": kid_for_secret(SECRET_B)}


def test_token_of_the_previous_secret_verifies_after_rotation() -> None:
    old = backend_for(JWT_SECRET=SECRET_A).encode(CLAIMS)
    assert backend_for(JWT_SECRET=SECRET_B, JWT_SECRET_PREV=SECRET_A).decode(old)["user_id"] == 1


def test_token_of_a_dropped_secret_is_key_unknown() -> None:
    old = backend_for(JWT_SECRET=SECRET_A).encode(CLAIMS)
    backend = backend_for(JWT_SECRET=SECRET_B)
    with pytest.raises(KeyRejectedError) as caught:
        backend.decode(old)
    assert caught.value.reason == "key_unknown"


def test_kid_selects_the_key_no_other_key_is_tried() -> None:
    # Signed with A but labelled with B's kid: must fail, although A is in the ring.
    forged = jwt.encode(CLAIMS, SECRET_A, algorithm="HS256", headers={"kid": kid_for_secret(SECRET_B)})
    with pytest.raises(TokenBackendError):
        backend_for(JWT_SECRET=SECRET_B, JWT_SECRET_PREV=SECRET_A).decode(forged)


def raw_jwt(header: dict, payload: dict, secret: str) -> str:
    """A signed HS256 JWT with any header at all (PyJWT refuses to write a non-string kid)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("kid", [7, None, ["x"], {"a": 1}])
def test_non_string_kid_is_malformed(kid) -> None:
    token = raw_jwt({"alg": "HS256", "typ": "JWT", "kid": kid}, CLAIMS, SECRET_A)
    with pytest.raises(KeyRejectedError) as caught:
        backend_for(JWT_SECRET=SECRET_A).decode(token)
    assert caught.value.reason == "malformed"


def test_algorithm_is_pinned_per_key() -> None:
    token = jwt.encode(
        CLAIMS, SECRET_A * 2, algorithm="HS512", headers={"kid": kid_for_secret(SECRET_A)}
    )  # the right kid, the wrong algorithm: refused before any signature check
    with pytest.raises(TokenBackendError):
        backend_for(JWT_SECRET=SECRET_A).decode(token)


def test_issued_tokens_verify_through_the_api_path(user) -> None:
    refresh = KeyedRefreshToken.for_user(user)
    access = str(refresh.access_token)
    assert isinstance(access_decode(access), KeyedAccessToken)
    assert jwt.get_unverified_header(access)["kid"].startswith("env-")


def test_unknown_kid_reaches_the_client_as_key_unknown(api_client, user) -> None:
    token = jwt.encode(
        {**CLAIMS, "user_id": user.id, "iss": "bulwark", "aud": "bulwark-api"},
        SECRET_A,
        algorithm="HS256",
        headers={"kid": "env-0000000000000000"},
    )
    with pytest.raises(TokenNotValidError) as caught:
        access_decode(token)
    assert caught.value.reason == "key_unknown"
    response = api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["error"]["detail"] == {"reason": "key_unknown"}
