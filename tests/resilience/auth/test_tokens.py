from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.tokens import (
    MAX_TOKEN_BYTES,
    KeyedAccessToken,
    access_decode,
    refresh_blacklist,
    refresh_rotate,
    token_decode,
    tokens_for_user,
)
from tests.factories import UserFactory
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"


def _get_me(api_client, authorization: str):
    return api_client.get(ME, HTTP_AUTHORIZATION=authorization)


def _refused(response, reason: str | None = None) -> dict:
    error = assert_error(response, 401, "token_not_valid")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert isinstance(error["detail"]["reason"], str)
    if reason is not None:
        assert error["detail"]["reason"] == reason
    return error


# tokens through the API (Authorization: Bearer ...)


def test_bearer_access_token_authenticates(api_client, user):
    response = _get_me(api_client, f"Bearer {tokens_for_user(user)['access']}")
    assert response.status_code == 200
    assert response.json()["id"] == user.id


def test_bearer_scheme_is_case_insensitive(api_client, user):
    assert _get_me(api_client, f"bearer {tokens_for_user(user)['access']}").status_code == 200


def test_no_token_is_not_authenticated_with_bearer_challenge(api_client, db):
    response = api_client.get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_other_scheme_is_not_authenticated(api_client, db):
    response = _get_me(api_client, "Basic dXNlcjpwYXNz")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer a.b.c", "Bearer ", "Bearer two words", "Bearer é.é.é"])
def test_garbage_token_is_token_not_valid_malformed(api_client, db, header):
    _refused(_get_me(api_client, header), "malformed")


def test_expired_token_is_token_not_valid_expired(api_client, user):
    token = KeyedAccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(minutes=5))
    _refused(_get_me(api_client, f"Bearer {token}"), "expired")


def test_token_signed_with_another_secret_is_token_not_valid(api_client, user):
    payload = AccessToken.for_user(user).payload
    forged = jwt.encode(payload, "another-secret-that-is-long-enough-to-sign-0123", algorithm="HS256")
    assert forged.count(".") == 2
    error = _refused(_get_me(api_client, f"Bearer {forged}"))
    assert error["detail"]["reason"] not in {"expired", "wrong_type"}


def test_unsigned_token_is_token_not_valid(api_client, user):
    payload = AccessToken.for_user(user).payload
    unsigned = jwt.encode(payload, None, algorithm="none")
    _refused(_get_me(api_client, f"Bearer {unsigned}"))


def test_token_over_8kb_is_token_not_valid_not_500(api_client, user):
    token = AccessToken.for_user(user)
    token["padding"] = "x" * 9000
    raw = str(token)
    assert len(raw) > MAX_TOKEN_BYTES
    _refused(_get_me(api_client, f"Bearer {raw}"))
    _refused(_get_me(api_client, f"Bearer {'a' * 20000}.b.c"))


def test_refresh_token_used_as_access_is_wrong_type(api_client, user):
    _refused(_get_me(api_client, f"Bearer {tokens_for_user(user)['refresh']}"), "wrong_type")


def test_token_of_deleted_user_is_token_not_valid(api_client):
    user = UserFactory()
    access = tokens_for_user(user)["access"]
    user.delete()
    _refused(_get_me(api_client, f"Bearer {access}"))


def test_token_of_inactive_user_is_token_not_valid(api_client):
    user = UserFactory()
    access = tokens_for_user(user)["access"]
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    _refused(_get_me(api_client, f"Bearer {access}"))


def test_bad_token_on_public_endpoint_is_refused_not_ignored(api_client, db):
    _refused(api_client.get("/api/products/", HTTP_AUTHORIZATION="Bearer a.b.c"), "malformed")


# the token module itself


def test_tokens_for_user_issue_access_and_refresh_for_that_user(user):
    tokens = tokens_for_user(user)
    assert access_decode(tokens["access"])["user_id"] == str(user.id)
    assert isinstance(token_decode(tokens["refresh"], RefreshToken), RefreshToken)


def test_token_decode_accepts_ascii_bytes(user):
    raw = tokens_for_user(user)["access"].encode()
    assert isinstance(access_decode(raw), AccessToken)


def test_token_decode_non_ascii_bytes_is_malformed(db):
    with pytest.raises(TokenNotValidError) as excinfo:
        access_decode("é.é.é".encode())
    assert excinfo.value.reason == "malformed"


def test_token_decode_too_large_is_refused(db):
    with pytest.raises(TokenNotValidError):
        access_decode("a" * (MAX_TOKEN_BYTES + 1))


def test_refresh_rotate_blacklists_old_token(user):
    old = tokens_for_user(user)["refresh"]
    new = refresh_rotate(old)
    assert new["refresh"] != old
    with pytest.raises(TokenNotValidError) as excinfo:
        refresh_rotate(old)
    assert excinfo.value.reason == "blacklisted"
    assert isinstance(access_decode(new["access"]), AccessToken)


def test_refresh_blacklist_makes_token_unusable(user):
    refresh = tokens_for_user(user)["refresh"]
    refresh_blacklist(refresh)
    with pytest.raises(TokenNotValidError) as excinfo:
        refresh_rotate(refresh)
    assert excinfo.value.reason == "blacklisted"


def test_tokens_are_signed_with_configured_secret(user):
    access = tokens_for_user(user)["access"]
    claims = jwt.decode(access, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"], audience="bulwark-api")
    assert claims["token_type"] == "access"
