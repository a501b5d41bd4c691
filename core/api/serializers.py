"""Serializer bases shared by the API, and the error envelope as OpenAPI documents it."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.exceptions import ERROR_CODES


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (a typo is an error, not a silent no-op)."""

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
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[entry.code for entry in ERROR_CODES], help_text="Stable snake_case error code."
    )
    message = serializers.CharField()
    detail = serializers.JSONField(allow_null=True, help_text="Structured detail: {field: [messages]} for validation.")
    request_id = serializers.CharField()


class ErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
