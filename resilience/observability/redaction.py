"""No secret in any log: a logging filter that redacts a record before any handler (or the log queue) sees it.

What is replaced by ``[REDACTED]``, in the message (after ``%`` formatting), in every ``extra`` field (nested
dicts and lists too), in the exception text and the stack text:

- the configuration's secret values, registered by ``secrets_register`` (``logging_config`` does it):
  ``SECRET_KEY`` and its fallbacks, ``JWT_SECRET``/``JWT_SECRET_PREV``, the database passwords, the Redis URL's
  password, ``METRICS_TOKEN``; values shorter than ``MIN_SECRET_LENGTH`` are not registered (they would blank
  out ordinary words);
- patterns: ``Bearer <token>``, JWTs (``eyJ...``), ``password=...``/``"password": "..."`` and the like in text,
  session/CSRF cookie values, a ``Cookie:``/``Set-Cookie:`` header's value, and Luhn-valid 13-19 digit runs
  (card numbers; spaces and dashes between the digits allowed);
- the value of an ``extra`` key or a ``%(name)s`` argument named like a secret (password, token, secret,
  authorization, cookie, card...), and that value wherever else it appears in the record.

Redaction never drops a record: if it fails on a value, the value is replaced by a placeholder instead.
No I/O, no Django import (gunicorn's master uses it before Django is set up).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6
_MAX_DEPTH = 6

# Key names whose values are secrets (matched anywhere in the name, case-insensitively).
SECRET_KEY_NAME = re.compile(
    r"pass(word|wd|phrase)|^pass$|pwd|token|secret|authorization|cookie|(^|_)card|^pan$|cvv|cvc|api[_-]?key|"
    r"signing[_-]?key|private[_-]?key|credential|sessionid|csrf",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def secret_name(key: str) -> bool:
    """Whether ``key`` names a secret. Memoised: the same few hundred names come back on every record, and gunicorn's
    access-log record carries every request and response header and WSGI variable as a key of its own (some 80
    per request): matching each against the pattern was about 2 M instructions of every request (callgrind), a
    seventh of a product read. A client sending new header names only fills the memo (bounded), as before."""
    return SECRET_KEY_NAME.search(key) is not None


# LogRecord attributes that are never redacted by name (they hold the record's own bookkeeping).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_BEARER = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}")
_HEADER = re.compile(r"\b((?:Set-)?Cookie|Authorization|X-Api-Key|Proxy-Authorization)(\s*:\s*)([^\r\n]+)", re.I)
_COOKIE = re.compile(r"\b(sessionid|csrftoken|csrfmiddlewaretoken|bulwark_[A-Za-z0-9_]*)=([^\s;,&'\"]+)", re.I)
_KEY_VALUE = re.compile(
    # The key starts a word and is at most 40 letters either side of the secret-ish part: a long run of letters
    # (a 20 KB query string) is scanned once, not from every position (quadratic: 21 s for 20 KB).
    r"""(?<![A-Za-z_-])(?P<key>["']?[A-Za-z_-]{0,40}?(?:pass(?:word|wd|phrase)?|pwd|token|secret|api[_-]?key|"""
    r"""signing[_-]?key|authorization|cookie|card_?number|cvv|cvc)[A-Za-z_-]{0,40}["']?)"""
    r"""(?P<sep>\s*(?:=|:)\s*(?!\[REDACTED\])\[?\s*)(?P<value>"[^"]*"|'[^']*'|[^\s&;,"'\[\]\})]+)""",
    re.IGNORECASE,
)
_DIGIT_RUN = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")

_lock = threading.Lock()
_known: tuple[str, ...] = ()


def secrets_register(values: Iterable[str | None]) -> None:
    """Add secret values to redact wherever they appear (longest first, so a secret that holds another goes whole)."""
    global _known
    with _lock:
        merged = set(_known) | {value for value in values if value and len(value) >= MIN_SECRET_LENGTH}
        _known = tuple(sorted(merged, key=len, reverse=True))


def secrets_clear() -> None:
    """Forget the registered values (tests)."""
    global _known
    with _lock:
        _known = ()


def known_secrets() -> tuple[str, ...]:
    return _known


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        number = int(char)
        if position % 2:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return REDACTED if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in {'"', "'"} else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret, secret-looking pattern and card number replaced by ``[REDACTED]``."""
    if not text:
        return text
    for secret in (*sorted(extra_secrets, key=len, reverse=True), *_known):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _COOKIE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _KEY_VALUE.sub(_key_value, text)
    return _DIGIT_RUN.sub(_card, text)


def _secret_values(value: Any, found: list[str], depth: int = 0) -> None:
    """Collect the strings inside a value that sits under a secret-named key."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str) and len(value) >= 4:  # shorter: would blank out ordinary text
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _secret_values(item, found, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _secret_values(item, found, depth + 1)


def _collect_named(mapping: dict[Any, Any], found: list[str], depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        return
    for key, value in mapping.items():
        if isinstance(key, str) and secret_name(key):
            _secret_values(value, found)
        elif isinstance(value, dict):
            _collect_named(value, found, depth + 1)


def redact_value(value: Any, extra_secrets: Iterable[str] = (), depth: int = 0) -> Any:
    """A JSON-friendly copy of ``value``: strings redacted, secret-named keys blanked, other objects as text."""
    extra_secrets = tuple(extra_secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value, extra_secrets)
    if isinstance(value, dict):
        return {
            str(key): REDACTED
            if isinstance(key, str) and secret_name(key)
            else redact_value(item, extra_secrets, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):  # the same kind of container (a set stays a set)
        return type(value)(redact_value(item, extra_secrets, depth + 1) for item in value)
    try:
        text = str(value)
    except Exception as exc:  # noqa: BLE001 - a broken __str__ must not drop the record
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return redact_text(text, extra_secrets)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place: message (formatted now, ``args`` cleared), extras, exception and stack text."""
    named: list[str] = []
    extras = {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}
    _collect_named(extras, named)
    if isinstance(record.args, dict):
        _collect_named(record.args, named)
    try:
        message = record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a bad format string: keep the template, say why
        message = f"{record.msg!s} (unformattable arguments: {type(exc).__name__})"
    record.msg = redact_text(message, named)
    record.args = None
    for key, value in extras.items():
        record.__dict__[key] = REDACTED if secret_name(key) else redact_value(value, named)
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text, named)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info, named)
    return record


class RedactionFilter(logging.Filter):
    """Redacts every record it sees (``redact_record``) and always lets it through.

    Put it on a handler (the log queue's), not on a logger: a handler filter sees the records of every logger
    that propagates to it. The record is changed in place, so every later handler gets the redacted text (and
    the formatted ``exc_text``, which a formatter prefers to the traceback object).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_bulwark_redacted", False):
            redact_record(record)
            record._bulwark_redacted = True  # type: ignore[attr-defined]
        return True
