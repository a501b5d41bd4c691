"""DRF authentication: ``Authorization: Bearer <access token>``.

No header (or another scheme) means anonymous: protected views answer 401 ``not_authenticated``.
A Bearer header with a bad token is a 401 ``token_not_valid`` with a reason.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework_simplejwt.tokens import AccessToken

from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.tokens import access_decode, token_user


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
        return token_user(token)

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
