"""Rate-limit variables: one ``RATELIMIT_<SCOPE>`` per scope, read and validated like every other variable.

A rate is ``<count>/<period>``: ``10/m``, ``300/m``, ``1000/h``, ``50/10m`` (the period is ``s``, ``m``,
``h`` or ``d`` with an optional multiplier), or ``off`` to switch one scope off. A malformed rate is a
start-up problem listed with the others, never a traceback.
"""

from __future__ import annotations

import re

from resilience.config.reader import EnvReader
from resilience.config.schema import SCHEMA_BY_NAME

# scope -> its variable; the scopes themselves are described in resilience.ratelimit.policy.
RATE_VARIABLES: dict[str, str] = {
    "api": "RATELIMIT_API",
    "login": "RATELIMIT_LOGIN",
    "login_user": "RATELIMIT_LOGIN_USER",
    "admin_login": "RATELIMIT_ADMIN_LOGIN",
    "admin_login_user": "RATELIMIT_ADMIN_LOGIN_USER",
    "otp": "RATELIMIT_OTP",
    "register": "RATELIMIT_REGISTER",
    "refresh": "RATELIMIT_REFRESH",
    "checkout": "RATELIMIT_CHECKOUT",
}

_RATE = re.compile(r"^(\d{1,9})/(\d{0,6})([smhd])$")
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
OFF = "off"

Rate = tuple[int, int]  # (requests, window in seconds)


def parse_rate(value: str) -> Rate | None:
    """``(count, seconds)``; None for ``off``. Raises ValueError for anything else."""
    text = value.strip().lower().replace(" ", "")
    if text == OFF:
        return None
    match = _RATE.match(text)
    if not match:
        raise ValueError(value)
    count, multiplier, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    seconds = multiplier * _PERIODS[unit]
    if count < 1 or not 1 <= seconds <= 7 * 86400:
        raise ValueError(value)
    return count, seconds


def format_rate(rate: Rate | None) -> str:
    if rate is None:
        return OFF
    count, seconds = rate
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            multiplier = seconds // size
            return f"{count}/{'' if multiplier == 1 else multiplier}{unit}"
    return f"{count}/{seconds}s"


def read_rates(reader: EnvReader) -> dict[str, Rate | None]:
    """Every scope's rate (the variable's default when unset); a bad value is reported and the default kept."""
    rates: dict[str, Rate | None] = {}
    for scope, name in RATE_VARIABLES.items():
        default = SCHEMA_BY_NAME[name].default or OFF
        value = reader.raw(name) or default
        try:
            rates[scope] = parse_rate(value)
        except ValueError:
            reader.error(
                name,
                f"{value!r} is not a rate; use <count>/<period> such as 10/m, 300/m, 1000/h or 50/10m "
                "(period s, m, h or d, at most 7d), or off.",
            )
            rates[scope] = parse_rate(default)
    return rates
