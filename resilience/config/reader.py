"""Typed reads of environment variables that record problems instead of stopping at the first one.

Every value comes through :class:`~resilience.config.env.BulwarkEnv` (django-environ, values literal, ``NAME_FILE``
for any variable). django-environ's exact casts are used as they are; where its casts are lenient the reads below
validate first: a boolean must be one of the words below (``Env.bool('maybe')`` is False), a number must be one
(``Env.float('x1')`` is 1.0), a URL must have an accepted scheme and a host (``Env.url('not a url')`` is a URL).
Messages name the variable; they quote a bad value only when it is neither a secret nor a URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from resilience.config.env import BulwarkEnv, parse_dotenv
from resilience.config.schema import SCHEMA_BY_NAME

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Finding:
    """One thing validation found about a variable: an error stops start-up, a warning names a SPOF or a fallback."""

    severity: Literal["error", "warning"]
    name: str
    area: str
    message: str
    spof: bool = False  # a warning that names a single point of failure

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def read_dotenv(path: Path) -> dict[str, str]:
    """A ``.env`` file's values, parsed by django-environ's ``read_env`` into a dict (never ``os.environ``).

    ``KEY=value`` lines (``export`` allowed), ``#`` comments, optional quotes; values literal (``$`` is kept).
    A line that is not ``NAME=value`` is skipped here (the loader reports it by number); no file gives ``{}``,
    a file that cannot be read raises ``OSError`` or ``UnicodeDecodeError``.
    """
    if not path.is_file():
        return {}
    return parse_dotenv(path.read_text(encoding="utf-8-sig"))[0]


MAX_DURATION = timedelta(days=3650)


def parse_duration(value: str) -> timedelta | None:
    """``15m``, ``24h``, ``7d`` or bare seconds; None when not a duration or beyond ten years."""
    match = _DURATION.match(value)
    if not match or len(match.group(1)) > 12:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return timedelta(seconds=seconds) if seconds <= MAX_DURATION.total_seconds() else None


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class EnvReader:
    """Reads typed values, collecting a :class:`Finding` for each problem (never a secret's value)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = BulwarkEnv(environ)
        self.findings: list[Finding] = []
        self.present: set[str] = set()
        self._raw: dict[str, str | None] = {}
        self._file_problem: set[str] = set()

    def error(self, name: str, message: str) -> None:
        self.findings.append(Finding("error", name, self._area(name), message))

    def warning(self, name: str, message: str, *, spof: bool = False) -> None:
        self.findings.append(Finding("warning", name, self._area(name), message, spof=spof))

    @staticmethod
    def _area(name: str) -> str:
        var = SCHEMA_BY_NAME.get(name.removesuffix("_FILE"))
        return var.area if var else "configuration"

    def _shown(self, name: str, value: str) -> str:
        """How a bad value may be quoted in a message: never for secrets."""
        return "the value given" if SCHEMA_BY_NAME[name].secret else repr(value)

    def raw(self, name: str) -> str | None:
        """The stripped value (from NAME_FILE when given), or None when absent or blank. Read once per name."""
        if name not in self._raw:
            self._raw[name] = self._read(name)
        return self._raw[name]

    def _read(self, name: str) -> str | None:
        value = self.env.str(name, default=None)
        file_name = f"{name}_FILE"
        if name in self.env.file_problems:
            self._file_problem.add(name)
            self.error(file_name, self.env.file_problems[name])
            return None
        value = (value or "").strip()
        if not value and self.env.from_file(name):
            self._file_problem.add(name)
            self.error(file_name, f"{self.env.ENVIRON.file_of(name)} is empty; it must hold the value of {name}.")
            return None
        if value:
            self.present.add(name)
        return value or None

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        var = SCHEMA_BY_NAME[name]
        if value is None and var.level == "required" and name not in self._file_problem:
            self.error(name, f"missing. {var.help}")
        return value if value is not None else var.default

    def has_error(self, name: str) -> bool:
        return any(f.severity == "error" and f.name in (name, f"{name}_FILE") for f in self.findings)

    def missing_reported(self, name: str) -> bool:
        return name in self._file_problem

    def integer(self, name: str, minimum: int = 0, maximum: int | None = None) -> int:
        var = SCHEMA_BY_NAME[name]
        value = self.raw(name) or var.default or "0"
        try:
            number = self.env.parse_value(value, int)  # int(): exact, unlike Env.float ('x1' -> 1.0)
        except ValueError:
            self.error(name, f"{self._shown(name, value)} is not a whole number. {var.help}")
            return int(var.default or 0)
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.error(name, f"{number} is out of range; it must be {bounds}.")
            return int(var.default or minimum)
        return number

    def boolean(self, name: str) -> bool:
        var = SCHEMA_BY_NAME[name]
        value = (self.raw(name) or var.default or "false").lower()
        if value not in _TRUE | _FALSE:  # Env.bool reads any other word as False
            self.error(name, f"{self._shown(name, value)} is not a boolean; use true or false.")
            value = var.default or "false"
        return self.env.parse_value(value, bool)

    def duration(self, name: str) -> timedelta:
        var = SCHEMA_BY_NAME[name]
        value = self.raw(name) or var.default or ""
        parsed = parse_duration(value)
        if parsed is None or parsed.total_seconds() == 0:
            self.error(name, f"{self._shown(name, value)} is not a duration; use e.g. 15m, 24h, 7d or seconds.")
            return parse_duration(var.default or "0") or timedelta(0)
        return parsed

    def choice(self, name: str) -> tuple[str, bool]:
        """The value and whether it was valid (an invalid one falls back to the default)."""
        var = SCHEMA_BY_NAME[name]
        value = self.raw(name) or var.default or ""
        if value not in var.choices:
            self.error(name, f"{self._shown(name, value)} is not one of {', '.join(var.choices)}.")
            return var.default or "", False
        return value, True

    def items(self, name: str) -> list[str]:
        value = self.raw(name)
        return [item.strip() for item in self.env.parse_value(value, list) if item.strip()] if value else []

    def url(self, name: str, schemes: set[str], example: str, value: str | None = None) -> str | None:
        """A URL with one of ``schemes``, a host and a valid port (if any), or None and an error.

        The message never quotes the URL: any URL may carry a user and password.
        """
        value = value if value is not None else self.raw(name)
        if value is None:
            return None
        try:
            parts = self.env.parse_value(value, urlparse)  # Env.url's cast: it accepts anything
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            valid = parts.scheme in schemes and bool(parts.netloc or parts.scheme == "unix")
            valid = valid and not any(char.isspace() for char in value)
        except ValueError:
            valid = False
        if not valid:
            self.error(name, f"the value given is not a valid {'/'.join(sorted(schemes))} URL; use e.g. {example}.")
            return None
        return value
