from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import error_responses
from core.api.serializers import PasswordField, StrictInputSerializer, query_params_validate
from resilience.auth.services import user_logout_everywhere
from resilience.auth.tokens import refresh_blacklist, refresh_rotate
from shop.accounts.services import user_login, user_register


class UserOutputSerializer(serializers.ModelSerializer):
    # Declared, not derived from the model: the model's pattern (Python's Unicode ``\w``) reads as ASCII-only in
    # OpenAPI's ECMA-262 regex dialect, and its e-mail format as ASCII-only, while Django accepts (and this
    # returns) names such as "zoë" and addresses such as "ana@correo.españa".
    username = serializers.CharField(
        read_only=True,
        max_length=150,
        help_text="As stored: letters and digits of any script and @/./+/-/_, NFKC-normalised.",
    )
    email = serializers.CharField(
        read_only=True, max_length=254, help_text="The account's e-mail address (may be empty)."
    )

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email"]


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    ratelimit_scopes = {"POST": ("register",)}

    class InputSerializer(StrictInputSerializer):
        # ASCII, spelt out: OpenAPI reads a pattern as ECMA-262, where ``\w`` is ASCII-only, while Python's is
        # Unicode -- the schema said "zoë" was invalid and the API took it (and NFKC made "½" a name with U+2044
        # in it, which Django's own validator refuses). Accounts made before keep their names and log in as before.
        username = serializers.RegexField(
            r"^[A-Za-z0-9_.@+-]+\Z",
            max_length=150,
            error_messages={"invalid": "ASCII letters, digits and @/./+/-/_ only."},
        )
        email = serializers.EmailField(max_length=254)
        password = PasswordField(
            max_length=128,
            help_text="Judged by the password validators: long enough, not all digits, not a common password, "
            "not too like the username or e-mail.",
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: UserOutputSerializer,
            # Beyond the schema: a taken username or e-mail, a password the validators refuse.
            **error_responses(400, 429, s400=("validation_error",)),
        },
        tags=["auth"],
        summary="Create a customer account",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response(UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenObtainApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    # Per client IP and per username: one address guessing many passwords, many addresses guessing one account's.
    ratelimit_scopes = {"POST": ("login", "login_user")}

    class InputSerializer(StrictInputSerializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: TokenPairSerializer,
            **error_responses(400, 401, 429, s400=("validation_error",), s401=("invalid_credentials",)),
        },
        tags=["auth"],
        summary="Log in: exchange credentials for an access and a refresh token",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(user_login(**data.validated_data))


class RefreshInputSerializer(StrictInputSerializer):
    refresh = serializers.CharField()  # no max_length: an oversized token is a 401 too_large, like a Bearer one


class TokenRefreshApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    ratelimit_scopes = {"POST": ("refresh",)}

    @extend_schema(
        request=RefreshInputSerializer,
        responses={
            200: TokenPairSerializer,
            **error_responses(400, 401, 429, s400=("validation_error",), s401=("token_not_valid",)),
        },
        tags=["auth"],
        summary="Exchange a refresh token for a new pair (the old one stops working)",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(refresh_rotate(data.validated_data["refresh"]))


class LogoutApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        request=RefreshInputSerializer,
        responses={204: None, **error_responses(400, 401, s400=("validation_error",), s401=("token_not_valid",))},
        tags=["auth"],
        summary="Log out: the refresh token can never be used again",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refresh_blacklist(data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutEverywhereApi(APIView):
    ratelimit_scopes = {"POST": ("refresh",)}

    @extend_schema(
        request=None,
        responses={204: None, **error_responses(429)},
        tags=["auth"],
        summary="Log out everywhere: every access and refresh token of this user stops working",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        user_logout_everywhere(user=request.user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    @extend_schema(responses={200: UserOutputSerializer}, tags=["auth"], summary="The authenticated user")
    def get(self, request: Request) -> Response:
        query_params_validate(request)
        return Response(UserOutputSerializer(request.user).data)
