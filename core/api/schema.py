"""OpenAPI helpers: the error envelope on every endpoint, its codes and their statuses from ``ERROR_CODES``, and the
constraints the API enforces, stated so that a client generated from the schema sends valid requests.

* :func:`error_responses` documents an operation's own error statuses (``s409=("out_of_stock",)`` narrows one).
* :func:`document_common_errors` (a post-processing hook) adds the statuses every operation can answer whatever
  its view says: 400 (unknown query parameters, a malformed request), 401 where a bearer token is read, 406,
  413/415 where a body is read, 500 and 503 (``read_only_mode`` on writes); ``resilience.ratelimit.openapi``
  adds 429.
* :class:`StrictInputSerializerExtension` documents what :class:`~core.api.serializers.StrictInputSerializer`
  enforces: no unknown properties, string lengths as sent, no NUL character, not blank after trimming.
* :func:`id_parameter` and :func:`header_parameter` document path ids and request headers with their ranges.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import password_validation
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object, force_instance, get_doc
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from core.api.serializers import ErrorEnvelopeSerializer, PasswordField, StrictInputSerializer
from core.exceptions import CODES, ERROR_CODES, codes_for_status

MAX_ID = 2**63 - 1  # ids are bigint primary keys
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
BEARER = "bearerAuth"
SAFE_METHODS = frozenset({"get", "head", "options"})


def _char_class(chars: list[str]) -> str:
    """``chars`` as the inside of a regex class, in ``\\uXXXX`` ranges: the same in Python's and ECMA-262's dialect."""
    points, ranges = sorted(ord(c) for c in chars), []
    for point in points:
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


# What str.strip() (so DRF's trim_whitespace) removes, spelt out: ``\s`` means other characters in ECMA-262, the
# dialect OpenAPI patterns are read in, than in Python, the one the server (and Hypothesis) use.
WHITESPACE = _char_class([chr(point) for point in range(0x3001) if chr(point).isspace()])  # none is above U+3000
# What DRF's CharField refuses whatever the field: a NUL character anywhere; and, when it trims whitespace and
# blank is not allowed, a value that is only whitespace.
NO_NUL = r"^[^\u0000]*$"
NOT_BLANK = rf"^[^\u0000]*[^{WHITESPACE}\u0000][^\u0000]*$"
_CODE_IN_DESCRIPTION = re.compile(r"(?:^|; )([a-z_]+):")


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


def id_parameter(name: str, description: str) -> OpenApiParameter:
    """A path id: a positive bigint (0 or an id that is not yours is a 404, like an unknown one)."""
    return OpenApiParameter(
        name,
        {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
        OpenApiParameter.PATH,
        description=description,
    )


def header_parameter(
    name: str, *, pattern: str, max_length: int, description: str, required: bool = False
) -> OpenApiParameter:
    """A request header the view reads, with the shape it accepts (another shape is a 400 naming it)."""
    return OpenApiParameter(
        name,
        {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern},
        OpenApiParameter.HEADER,
        required=required,
        description=description,
    )


# ----------------------------------------------------------------------------------------------------------
# What StrictInputSerializer (bodies and query strings) enforces
# ----------------------------------------------------------------------------------------------------------


def password_rules() -> tuple[int, bool]:
    """``(minimum length, must not be all digits)`` from ``AUTH_PASSWORD_VALIDATORS``."""
    validators = password_validation.get_default_password_validators()
    min_length = max([getattr(v, "min_length", 1) for v in validators], default=1)
    not_numeric = any(isinstance(v, password_validation.NumericPasswordValidator) for v in validators)
    return min_length, not_numeric


def _document_string(field: serializers.Field, schema: dict[str, Any]) -> None:
    """State DRF's string rules on the property: the NUL ban, the trimming, and a password's validators."""
    if not isinstance(field, serializers.CharField):
        return
    blank = [branch for branch in schema.get("oneOf", []) if branch.get("maxLength") == 0]
    if blank:  # drf-spectacular's "pattern or empty" oneOf: "" would match both branches, so neither
        [main] = [branch for branch in schema.pop("oneOf") if branch not in blank]
        schema.update(main)
    if schema.get("type") != "string":
        return
    if isinstance(field, PasswordField):
        min_length, not_numeric = password_rules()
        schema["minLength"] = max(schema.get("minLength", 0), min_length)
        schema["pattern"] = r"^[^\u0000]*[^0-9\u0000][^\u0000]*$" if not_numeric else NO_NUL
        return
    pattern = schema.get("pattern")
    if pattern is not None:
        if not (pattern.startswith("^") and pattern.endswith("$")):
            return
        inner = f"(?:{pattern[1:-1]})" + ("?" if field.allow_blank else "")
        # The field's regex is matched after trimming: whitespace around a matching value is accepted.
        schema["pattern"] = rf"^[{WHITESPACE}]*{inner}[{WHITESPACE}]*$" if field.trim_whitespace else f"^{inner}$"
        return
    if "format" in schema:  # email, uri...: the format rules out NUL and blank already
        return
    schema["pattern"] = NOT_BLANK if field.trim_whitespace and not field.allow_blank else NO_NUL


class StrictInputSerializerExtension(OpenApiSerializerExtension):
    """A strict body is ``additionalProperties: false``; each string property states what DRF refuses.

    Query serializers (:class:`~core.api.serializers.StrictQuerySerializer`) named in ``parameters`` go
    through here too: their properties become the documented query parameters.
    """

    target_class = "core.api.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        serializer = force_instance(self.target)
        schema = auto_schema._map_serializer(serializer, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        if schema.get("description") == get_doc(StrictInputSerializer):  # say nothing rather than the base's doc
            del schema["description"]
        properties = schema.get("properties", {})
        for name, field in serializer.fields.items():
            if name in properties:
                _document_string(field, properties[name])
        return schema


# ----------------------------------------------------------------------------------------------------------
# The statuses every operation can answer (post-processing hook)
# ----------------------------------------------------------------------------------------------------------


def _envelope(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}}


def _add_codes(responses: dict[str, Any], http_status: int, *codes: str) -> dict[str, Any]:
    """Document ``codes`` under ``http_status``, keeping the codes the view documented there already."""
    response = responses.get(str(http_status))
    if response is None:
        response = responses[str(http_status)] = _envelope(status_description(http_status, codes))
        return response
    known = {code for code in _CODE_IN_DESCRIPTION.findall(response.get("description", "")) if code in CODES}
    merged = tuple(entry.code for entry in ERROR_CODES if entry.code in known or entry.code in codes)
    response["description"] = status_description(http_status, merged)
    return response


def _retry_after(response: dict[str, Any]) -> None:
    response.setdefault("headers", {})["Retry-After"] = {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds to wait before retrying.",
    }


def document_common_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every ``/api/`` operation: the error statuses the shared machinery can answer, whatever its view."""
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            writes = method not in SAFE_METHODS
            # Every view validates its query string (an unknown parameter is a validation_error naming it);
            # Django refuses a malformed request (bad Host, too many fields) as bad_request.
            _add_codes(responses, 400, "validation_error", "bad_request")
            if "requestBody" in operation:
                _add_codes(responses, 400, "parse_error")
                _add_codes(responses, 415, "unsupported_media_type")
            if writes:  # the database middleware reads every write's body first
                _add_codes(responses, 413, "request_too_large")
            security = operation.get("security", [])
            if any(BEARER in requirement for requirement in security):
                _add_codes(responses, 401, "token_not_valid")  # a bad token is refused even where none is needed
                if {} not in security:
                    _add_codes(responses, 401, "not_authenticated")
            _add_codes(responses, 406, "not_acceptable")
            _add_codes(responses, 500, "internal_error")
            unavailable = _add_codes(responses, 503, "dependency_unavailable", *(["read_only_mode"] if writes else []))
            _retry_after(unavailable)
            operation["responses"] = dict(sorted(responses.items()))
    return result


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer <JWT>`` so the schema lists the security scheme (and Swagger UI can log in).

    Registered by being defined: this module is imported by every API module.
    """

    target_class = "resilience.auth.authentication.BearerTokenAuthentication"
    name = BEARER

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="HTTP_AUTHORIZATION",
            token_prefix="Bearer",  # noqa: S106 - the scheme's name, not a secret
            bearer_format="JWT",
        )
