from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.conftest import client_for
from tests.factories import TEST_PASSWORD, UserFactory
from tests.helpers import assert_error, assert_validation_error

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"
STRONG_PASSWORD = "a-Long-and-unusual-passphrase-42"


def _register_body(**overrides):
    return {"username": "alice", "email": "alice@example.com", "password": STRONG_PASSWORD, **overrides}


def _login(api_client, user) -> dict:
    response = api_client.post(TOKEN, {"username": user.username, "password": TEST_PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


# register


def test_register_creates_account_returning_id_username_email(api_client):
    response = api_client.post(REGISTER, _register_body(), format="json")
    assert response.status_code == 201
    body = response.json()
    user = get_user_model().objects.get(username="alice")
    assert body == {"id": user.id, "username": "alice", "email": "alice@example.com"}
    assert user.check_password(STRONG_PASSWORD)


def test_register_then_login_succeeds(api_client):
    api_client.post(REGISTER, _register_body(), format="json")
    response = api_client.post(TOKEN, {"username": "alice", "password": STRONG_PASSWORD}, format="json")
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


@pytest.mark.parametrize("password", ["short", "password123", "12345678901234", "alice1234"])
def test_register_weak_password_is_validation_error(api_client, password):
    response = api_client.post(REGISTER, _register_body(password=password), format="json")
    assert_validation_error(response, "password")
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.parametrize("username", ["existing", "EXISTING"])
def test_register_duplicate_username_is_validation_error(api_client, username):
    UserFactory(username="existing")
    response = api_client.post(REGISTER, _register_body(username=username), format="json")
    assert_validation_error(response, "username")
    assert get_user_model().objects.filter(username__iexact="existing").count() == 1


def test_register_duplicate_email_is_validation_error(api_client):
    UserFactory(username="bob", email="alice@example.com")
    response = api_client.post(REGISTER, _register_body(email="ALICE@example.com"), format="json")
    assert_validation_error(response, "email")


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", ""])
def test_register_invalid_email_is_validation_error(api_client, email):
    assert_validation_error(api_client.post(REGISTER, _register_body(email=email), format="json"), "email")


@pytest.mark.parametrize("username", ["has space", "semi;colon", "", "x" * 151, "nul\x00byte"])
def test_register_invalid_username_is_validation_error(api_client, username):
    assert_validation_error(api_client.post(REGISTER, _register_body(username=username), format="json"), "username")


@pytest.mark.parametrize("field", ["username", "email", "password"])
def test_register_missing_field_is_validation_error(api_client, field):
    body = _register_body()
    del body[field]
    assert_validation_error(api_client.post(REGISTER, body, format="json"), field)


def test_register_unknown_field_is_validation_error(api_client):
    response = api_client.post(REGISTER, _register_body(is_staff=True), format="json")
    assert_validation_error(response, "is_staff")
    assert not get_user_model().objects.filter(username="alice").exists()


def test_register_malformed_json_is_parse_error(api_client):
    response = api_client.post(REGISTER, data='{"username": "alice",', content_type="application/json")
    assert_error(response, 400, "parse_error")


@pytest.mark.parametrize("body", ["[1, 2]", '"alice"', "null", "42"])
def test_register_non_object_json_is_validation_error(api_client, body):
    response = api_client.post(REGISTER, data=body, content_type="application/json")
    assert_error(response, 400, "validation_error")


# token


def test_token_returns_access_and_refresh(api_client, user):
    tokens = _login(api_client, user)
    assert set(tokens) == {"access", "refresh"}
    me = api_client.get(ME, HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert me.status_code == 200
    assert me.json() == {"id": user.id, "username": user.username, "email": user.email}


def test_token_wrong_password_is_invalid_credentials(api_client, user):
    response = api_client.post(TOKEN, {"username": user.username, "password": "wrong"}, format="json")
    error = assert_error(response, 401, "invalid_credentials")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "access" not in str(error)


def test_token_unknown_user_is_invalid_credentials(api_client, db):
    response = api_client.post(TOKEN, {"username": "nobody", "password": TEST_PASSWORD}, format="json")
    assert_error(response, 401, "invalid_credentials")


def test_token_inactive_user_is_invalid_credentials(api_client):
    user = UserFactory(is_active=False)
    response = api_client.post(TOKEN, {"username": user.username, "password": TEST_PASSWORD}, format="json")
    assert_error(response, 401, "invalid_credentials")


@pytest.mark.parametrize("field", ["username", "password"])
def test_token_missing_field_is_validation_error(api_client, user, field):
    body = {"username": user.username, "password": TEST_PASSWORD}
    del body[field]
    assert_validation_error(api_client.post(TOKEN, body, format="json"), field)


def test_token_records_last_login(api_client, user):
    assert user.last_login is None
    _login(api_client, user)
    user.refresh_from_db()
    assert user.last_login is not None


# refresh


def test_refresh_rotates_and_old_refresh_is_blacklisted(api_client, user):
    tokens = _login(api_client, user)
    response = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) == {"access", "refresh"}
    assert rotated["refresh"] != tokens["refresh"]
    assert api_client.get(ME, HTTP_AUTHORIZATION=f"Bearer {rotated['access']}").status_code == 200

    again = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert assert_error(again, 401, "token_not_valid")["detail"]["reason"] == "blacklisted"

    # the rotated refresh token is itself usable once
    assert api_client.post(REFRESH, {"refresh": rotated["refresh"]}, format="json").status_code == 200


def test_refresh_with_access_token_is_wrong_type(api_client, user):
    tokens = _login(api_client, user)
    response = api_client.post(REFRESH, {"refresh": tokens["access"]}, format="json")
    assert assert_error(response, 401, "token_not_valid")["detail"]["reason"] == "wrong_type"


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "...", "ey.ey.ey"])
def test_refresh_garbage_is_token_not_valid_malformed(api_client, db, garbage):
    response = api_client.post(REFRESH, {"refresh": garbage}, format="json")
    assert assert_error(response, 401, "token_not_valid")["detail"]["reason"] == "malformed"


def test_refresh_missing_field_is_validation_error(api_client, db):
    assert_validation_error(api_client.post(REFRESH, {}, format="json"), "refresh")


def test_refresh_unknown_field_is_validation_error(api_client, user):
    tokens = _login(api_client, user)
    response = api_client.post(REFRESH, {"refresh": tokens["refresh"], "extra": 1}, format="json")
    assert_validation_error(response, "extra")


# logout


def test_logout_returns_204_then_refresh_is_refused(api_client, user):
    tokens = _login(api_client, user)
    response = api_client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 204
    assert response.content == b""
    again = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert assert_error(again, 401, "token_not_valid")["detail"]["reason"] == "blacklisted"


def test_logout_with_access_token_is_wrong_type(api_client, user):
    tokens = _login(api_client, user)
    response = api_client.post(LOGOUT, {"refresh": tokens["access"]}, format="json")
    assert assert_error(response, 401, "token_not_valid")["detail"]["reason"] == "wrong_type"


def test_logout_missing_refresh_is_validation_error(api_client, db):
    assert_validation_error(api_client.post(LOGOUT, {}, format="json"), "refresh")


# me


def test_me_returns_authenticated_user(user):
    response = client_for(user).get(ME)
    assert response.status_code == 200
    assert response.json() == {"id": user.id, "username": user.username, "email": user.email}


def test_me_without_token_is_not_authenticated(api_client, db):
    response = api_client.get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_refresh_for_deactivated_user_is_token_not_valid(api_client, user):
    tokens = _login(api_client, user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    response = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert assert_error(response, 401, "token_not_valid")["detail"]["reason"] == "user_inactive"


def test_refresh_for_deleted_user_is_token_not_valid(api_client):
    user = UserFactory()
    tokens = _login(api_client, user)
    user.delete()
    response = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert assert_error(response, 401, "token_not_valid")["detail"]["reason"] == "user_unknown"


# what the schema states is what is enforced


@pytest.mark.parametrize("username", ["zoë", "\uff46\uff55\uff4c\uff4c", "½", "\ufb01sh"])
def test_register_non_ascii_username_is_validation_error(api_client, username):
    """The schema's pattern is read as ECMA-262 (ASCII ``\\w``): the API refuses what it says is invalid."""
    response = api_client.post(REGISTER, _register_body(username=username), format="json")
    assert_validation_error(response, "username")
    assert not get_user_model().objects.exists()


def test_register_username_with_surrounding_whitespace_is_trimmed(api_client):
    response = api_client.post(REGISTER, _register_body(username="  alice\t"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    ("field", "value"),
    [("username", 12345), ("email", ["a@b.co"]), ("password", 123456789012), ("username", True)],
)
def test_register_json_value_of_another_type_is_validation_error(api_client, field, value):
    response = api_client.post(REGISTER, _register_body(**{field: value}), format="json")
    assert_validation_error(response, field)


def test_register_username_longer_than_150_with_whitespace_is_validation_error(api_client):
    """Lengths count what was sent: 150 letters and a space are 151 characters."""
    response = api_client.post(REGISTER, _register_body(username="a" * 150 + " "), format="json")
    assert_validation_error(response, "username")


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH, LOGOUT])
def test_auth_posts_refuse_an_unknown_query_parameter(api_client, path):
    response = api_client.post(f"{path}?next=/", _register_body(), format="json")
    error = assert_validation_error(response, "next")
    assert error["detail"]["next"] == ["Unknown query parameter."]


def test_me_refuses_an_unknown_query_parameter(auth_client):
    assert_validation_error(auth_client.get(ME, {"fields": "id"}), "fields")
