"""DRF authentication: ``Authorization: Bearer <access token>``.

No header (or another scheme) means anonymous: protected views answer 401 ``not_authenticated``.
A Bearer header with a bad token is a 401 ``token_not_valid`` with a reason.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from resilience.auth.tokens import access_decode
from resilience.errors import TokenNotValidError


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, AccessToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        credentials = credentials.strip()
        if not credentials or " " in credentials:
            raise TokenNotValidError("malformed")
        token = access_decode(credentials)
        return self._user(token), token

    def _user(self, token: AccessToken) -> AbstractBaseUser:
        user_id = token.get(api_settings.USER_ID_CLAIM)
        if user_id is None or not isinstance(user_id, int | str):
            raise TokenNotValidError("malformed")
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{api_settings.USER_ID_FIELD: user_id})
        except (user_model.DoesNotExist, ValueError, TypeError) as exc:
            raise TokenNotValidError("user_unknown") from exc
        if not user.is_active:
            raise TokenNotValidError("user_inactive")
        return user

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
