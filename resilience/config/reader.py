"""Typed reads of environment variables that record problems instead of stopping at the first one.

Secrets may come from ``NAME_FILE``. Values are taken literally: no ``$VAR`` interpolation, which
trips generated secrets that contain ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes; values taken literally."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


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
        self.environ = environ
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
        file_name = f"{name}_FILE"
        if self.environ.get(file_name, "").strip():
            path = Path(self.environ[file_name].strip())
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                self._file_problem.add(name)
                self.error(file_name, f"cannot read {path} ({why}); give a readable text file.")
                return None
            if not value:
                self._file_problem.add(name)
                self.error(file_name, f"{path} is empty; it must hold the value of {name}.")
                return None
        else:
            value = (self.environ.get(name) or "").strip()
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
            number = int(value)
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
        if value in _TRUE | _FALSE:
            return value in _TRUE
        self.error(name, f"{self._shown(name, value)} is not a boolean; use true or false.")
        return (var.default or "false") in _TRUE

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
        return [item.strip() for item in value.split(",") if item.strip()] if value else []

    def url(self, name: str, schemes: set[str], example: str, value: str | None = None) -> str | None:
        """A URL with one of ``schemes``, a host and a valid port (if any), or None and an error."""
        value = value if value is not None else self.raw(name)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            valid = parts.scheme in schemes and bool(parts.netloc or parts.scheme == "unix")
        except ValueError:
            valid = False
        if not valid:
            self.error(
                name, f"{self._shown(name, value)} is not a valid {'/'.join(sorted(schemes))} URL; use e.g. {example}."
            )
            return None
        return value
