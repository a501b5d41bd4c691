"""OpenAPI helpers: the error envelope on every endpoint, its codes and their statuses from ``ERROR_CODES``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse

from core.api.serializers import ErrorEnvelopeSerializer
from core.exceptions import CODES, codes_for_status


def status_description(http_status: int, codes: tuple[str, ...] = ()) -> str:
    """``code: meaning`` for each code this status answers (or only ``codes``, for one endpoint)."""
    chosen = codes or tuple(codes_for_status(http_status))
    return "; ".join(f"{code}: {CODES[code].meaning}" for code in chosen)


def error_responses(*statuses: int, **codes: tuple[str, ...]) -> dict[int, OpenApiResponse]:
    """``{status: OpenApiResponse(envelope)}`` for the given statuses; narrow one to its codes as ``s409=(...)``."""
    responses = {}
    for http_status in statuses:
        chosen = codes.get(f"s{http_status}", ())
        unknown = [code for code in chosen if code not in CODES or CODES[code].http_status != http_status]
        if unknown or not (chosen or codes_for_status(http_status)):
            raise ValueError(f"no listed error code answers {http_status} as {unknown or 'documented'}")
        responses[http_status] = OpenApiResponse(
            ErrorEnvelopeSerializer, description=status_description(http_status, chosen)
        )
    return responses


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
