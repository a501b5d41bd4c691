"""OpenAPI: every API operation may answer 429 (the global per-client limit), with the rate-limit headers.

Registered as a drf-spectacular post-processing hook. Views with their own scopes also list the 429 in
their ``extend_schema`` (``error_responses(429)``); this hook fills in the rest and documents the headers.
"""

from __future__ import annotations

from typing import Any

from core.api.schema import error_responses

_RATELIMIT_HEADERS = {
    "RateLimit-Limit": "Requests allowed in the current window (of the tightest limit on this route).",
    "RateLimit-Remaining": "Requests left in the current window.",
    "RateLimit-Reset": "Seconds until the current window ends.",
}
_ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"


def _header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "integer"}, "description": description}


def document_rate_limits(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    description = error_responses(429)[429].description
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            refused = responses.setdefault(
                "429",
                {"description": description, "content": {"application/json": {"schema": {"$ref": _ENVELOPE_REF}}}},
            )
            refused.setdefault("headers", {}).update(
                {
                    "Retry-After": _header("Seconds to wait before retrying."),
                    **{name: _header(text) for name, text in _RATELIMIT_HEADERS.items()},
                }
            )
            for status, response in responses.items():
                if str(status).startswith("2"):
                    response.setdefault("headers", {}).update(
                        {name: _header(text) for name, text in _RATELIMIT_HEADERS.items()}
                    )
    return result
