"""OpenAPI helpers: document the error envelope on every endpoint."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse

from resilience.api.serializers import ErrorEnvelopeSerializer

_DESCRIPTIONS = {
    400: "validation_error (detail = {field: [messages]}) or parse_error (malformed JSON)",
    401: "not_authenticated, invalid_credentials or token_not_valid (detail.reason)",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict (e.g. out_of_stock with detail.items)",
    422: "idempotency_key_mismatch",
    429: "rate_limited (Retry-After)",
    503: "read_only_mode or dependency_unavailable (Retry-After)",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """``{status: OpenApiResponse(envelope)}`` for the given statuses; override a text as ``s409="..."``."""
    return {
        status: OpenApiResponse(
            ErrorEnvelopeSerializer, description=descriptions.get(f"s{status}", _DESCRIPTIONS[status])
        )
        for status in statuses
    }


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer <JWT>`` so the schema lists the security scheme (and Swagger UI can log in).

    Registered by being defined: this module is imported by every API module.
    """

    target_class = "resilience.auth.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="HTTP_AUTHORIZATION",
            token_prefix="Bearer",  # noqa: S106 - the scheme's name, not a secret
            bearer_format="JWT",
        )
