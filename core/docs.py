"""Generated parts of the README: a block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` markers is
rewritten from its source of truth, and a drift test fails when the committed text differs.

``python -m core.docs`` rewrites the README's list of error codes from ``core.exceptions.ERROR_CODES``
(the environment table has its own writer, ``python -m resilience.config.docs readme``).
"""

from __future__ import annotations

from pathlib import Path

from core.exceptions import ERROR_CODES

README = Path(__file__).resolve().parent.parent / "README.md"
ERROR_CODES_BLOCK = "error-codes"


def between_markers(text: str, name: str, content: str) -> str:
    """``text`` with the block between ``<!-- name -->`` and ``<!-- /name -->`` replaced by ``content``."""
    start_marker, end_marker = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    start = text.index(start_marker) + len(start_marker)
    return text[:start] + content + text[text.index(end_marker, start) :]


def error_codes_table() -> str:
    rows = ["| Code | HTTP | Meaning |", "|---|---|---|"]
    rows += [f"| `{entry.code}` | {entry.http_status} | {entry.meaning} |" for entry in ERROR_CODES]
    return "\n".join(rows) + "\n"


def readme_with_error_codes(readme: str) -> str:
    return between_markers(readme, ERROR_CODES_BLOCK, error_codes_table())


if __name__ == "__main__":
    README.write_text(readme_with_error_codes(README.read_text(encoding="utf-8")), encoding="utf-8")
