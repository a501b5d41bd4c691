"""PostgreSQL WAL positions ("LSN", e.g. ``16/B374D848``) as comparable integers."""

from __future__ import annotations


def lsn_to_int(lsn: str | None) -> int | None:
    if not lsn:
        return None
    high, sep, low = lsn.partition("/")
    if not sep:
        return None
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return None


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
