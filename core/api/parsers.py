"""JSON parsing that turns pathological bodies into a 400 ``parse_error`` instead of a 500."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:  # thousands of nested [ or {: Python's parser gives up
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc
