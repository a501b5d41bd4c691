"""Serializer bases shared by the API, and the error envelope as OpenAPI documents it.

* :class:`StrictInputSerializer`: a request body that refuses unknown fields, takes JSON strings and integers
  only as such (no ``"2"`` for 2, no ``0`` for ``"0"``), and whose string lengths are the lengths the client
  sent (before trimming), so the limits the schema states are the limits enforced.
* :class:`StrictQuerySerializer`: the same for query parameters. Every API view validates its query string
  with one (:func:`query_params_validate`; :class:`NoQueryParams` for a view that takes none), so an unknown
  or misspelt parameter (``?pagesize=5``, ``?categroy=books``) is a ``400 validation_error`` naming it,
  never silently ignored.

The OpenAPI side of these rules (``additionalProperties: false``, the string patterns) is
:class:`core.api.schema.StrictInputSerializerExtension`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from core.exceptions import ERROR_CODES

UNKNOWN_FIELD = "Unknown field."
UNKNOWN_QUERY_PARAMETER = "Unknown query parameter."
NOT_A_STRING = "Not a valid string."


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (a typo is an error, not a silent no-op)."""

    unknown_message = UNKNOWN_FIELD
    json_types = True  # the data is a JSON body (a query string's values are all strings)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Views nest their own ``InputSerializer``; OpenAPI component names must be unique or one
        # endpoint's body is documented as another's. Name a nested one after its view
        # (``RegisterApi.InputSerializer`` -> ``RegisterApiInput``) unless it sets ``Meta`` itself.
        outer, _, name = cls.__qualname__.rpartition(".")
        if outer and "<locals>" not in outer and "Meta" not in cls.__dict__:
            ref_name = outer.rpartition(".")[2] + name.removesuffix("Serializer")
            cls.Meta = type("Meta", (), {"ref_name": ref_name})

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):  # a dict, or a QueryDict
            errors = {name: [self.unknown_message] for name in sorted(set(data.keys()) - set(self.fields))}
            errors.update(self._raw_length_errors(data))
            if self.json_types:
                errors.update(self._json_type_errors(data))
            errors.update(self._blank_errors(data))
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def _json_type_errors(self, data: Any) -> dict[str, list[str]]:
        """In a JSON body a string is a string and an integer an integer: DRF would take ``"2"`` and ``2.0`` for
        an integer and ``0`` for a string, where the schema says neither is one (a query string is all text)."""
        errors = {}
        for name, field in self.fields.items():
            value = data.get(name)
            if value is None or field.read_only:
                continue  # missing and null are the field's own errors
            if isinstance(field, serializers.CharField) and not isinstance(value, str):
                errors[name] = [NOT_A_STRING]
            elif isinstance(field, serializers.IntegerField) and (
                isinstance(value, bool) or not isinstance(value, int)
            ):
                errors[name] = [field.error_messages["invalid"]]
        return errors

    def _blank_errors(self, data: Any) -> dict[str, list[str]]:
        return {}  # in a body, DRF's own "may not be blank" applies

    def _raw_length_errors(self, data: Any) -> dict[str, list[str]]:
        """``max_length`` on the string as sent: DRF checks it after trimming whitespace, the schema before."""
        errors = {}
        for name, field in self.fields.items():
            if not isinstance(field, serializers.CharField) or field.max_length is None or name not in data:
                continue
            value = data.get(name)  # a QueryDict's last value, as the field reads it
            if isinstance(value, str) and len(value) > field.max_length:
                errors[name] = [field.error_messages["max_length"].format(max_length=field.max_length)]
        return errors


class PasswordField(serializers.CharField):
    """A new password: kept as typed (never trimmed), write-only. ``AUTH_PASSWORD_VALIDATORS`` judge it in the
    service; the schema states their length and all-digits rules (:func:`core.api.schema.password_rules`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("write_only", True)
        super().__init__(**kwargs)


class StrictQuerySerializer(StrictInputSerializer):
    """Query parameters that refuse unknown names; validate ``request.query_params`` with it.

    A parameter sent empty (``?page=``) is refused unless the field allows blank: DRF would read it as absent,
    as an HTML form's empty input, where the schema says it must be an integer or a non-empty string.
    """

    unknown_message = UNKNOWN_QUERY_PARAMETER
    json_types = False

    def _blank_errors(self, data: Any) -> dict[str, list[str]]:
        errors = {}
        for name, field in self.fields.items():
            if data.get(name) == "" and not getattr(field, "allow_blank", False):
                key = "blank" if "blank" in field.error_messages else "invalid"
                errors[name] = [field.error_messages[key]]
        return errors


class NoQueryParams(StrictQuerySerializer):
    """The query string of a view that takes no parameters: any parameter is refused."""


def query_params_validate(request: Request, serializer_class: type[StrictQuerySerializer] = NoQueryParams) -> Any:
    """The view's query parameters, validated (``400 validation_error`` naming each bad or unknown one)."""
    params = serializer_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    return params.validated_data


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[entry.code for entry in ERROR_CODES], help_text="Stable snake_case error code."
    )
    message = serializers.CharField()
    detail = serializers.JSONField(allow_null=True, help_text="Structured detail: {field: [messages]} for validation.")
    request_id = serializers.CharField()


class ErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
