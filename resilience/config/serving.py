"""Serving variables: the worker's thread count and, per traffic class, a concurrency limit, a time budget and a
body size limit (``SERVING_LIMIT_<CLASS>``, ``SERVING_BUDGET_<CLASS>``, ``SERVING_MAX_BODY_<CLASS>``).

The start-up rule that keeps ``ops`` answering under load: every other class's limit is below ``WEB_THREADS``,
so a flood in one class never takes every thread of a worker (and the bulkheads also keep one thread of each
worker for ``ops`` whatever the other classes do together: :mod:`resilience.serving.bulkheads`). A bad value is
a start-up problem listed with the others, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resilience.config.reader import EnvReader, parse_duration
from resilience.config.schema import SCHEMA_BY_NAME
from resilience.serving.classes import OPS, TRAFFIC_CLASSES

_SIZE = re.compile(r"^(\d{1,12})\s*([km]?)(i?b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
MAX_BODY_CEILING = 1024 * 1024 * 1024  # 1 GiB: beyond it a body belongs in object storage, not a request
MAX_BUDGET_SECONDS = 600


@dataclass(frozen=True)
class ServingConfig:
    threads: int  # gunicorn threads per worker
    limits: dict[str, int]  # class -> requests in flight per worker
    budgets: dict[str, float]  # class -> seconds
    max_bodies: dict[str, int]  # class -> bytes
    pool: str | None  # SERVING_POOL: the one class this server serves (with ops), None = every class


def limit_variable(traffic_class: str) -> str:
    return f"SERVING_LIMIT_{traffic_class.upper()}"


def budget_variable(traffic_class: str) -> str:
    return f"SERVING_BUDGET_{traffic_class.upper()}"


def max_body_variable(traffic_class: str) -> str:
    return f"SERVING_MAX_BODY_{traffic_class.upper()}"


def parse_size(value: str) -> int | None:
    """Bytes from ``65536``, ``64k``, ``64KiB``, ``2m``, ``2MB`` (k and m are 1024-based); None if not a size."""
    match = _SIZE.match(value.strip())
    if not match:
        return None
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def format_size(size: int) -> str:
    for unit, factor in (("m", 1024 * 1024), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def read_serving(reader: EnvReader) -> ServingConfig:
    threads = reader.integer("WEB_THREADS", minimum=2, maximum=64)
    limits: dict[str, int] = {}
    budgets: dict[str, float] = {}
    max_bodies: dict[str, int] = {}
    for traffic_class in TRAFFIC_CLASSES:
        limits[traffic_class] = _limit(reader, traffic_class, threads)
        budget_name = budget_variable(traffic_class)
        budget = reader.duration(budget_name).total_seconds()
        if budget > MAX_BUDGET_SECONDS:
            reader.error(budget_name, f"{budget:g}s is too long; a request's budget is at most {MAX_BUDGET_SECONDS}s.")
            budget = _default_seconds(budget_name)
        budgets[traffic_class] = budget
        max_bodies[traffic_class] = _max_body(reader, traffic_class)
    pool = reader.raw("SERVING_POOL")
    if pool is not None and pool not in TRAFFIC_CLASSES:
        reader.error("SERVING_POOL", f"{pool!r} is not a traffic class; use one of {', '.join(TRAFFIC_CLASSES)}.")
        pool = None
    return ServingConfig(threads=threads, limits=limits, budgets=budgets, max_bodies=max_bodies, pool=pool)


def _limit(reader: EnvReader, traffic_class: str, threads: int) -> int:
    name = limit_variable(traffic_class)
    default = int(SCHEMA_BY_NAME[name].default or 1)
    limit = reader.integer(name, minimum=1, maximum=64)
    if reader.has_error(name):
        return min(default, threads - 1)
    if traffic_class == OPS:
        if limit > threads:
            reader.error(name, f"{limit} is above WEB_THREADS={threads}: a worker never runs more requests at once.")
            return threads
        return limit
    if limit >= threads:
        reader.error(
            name,
            f"{limit} would let {traffic_class} requests take every one of a worker's {threads} threads (WEB_THREADS), "
            f"leaving none for health probes and metrics scrapes; it must be at most {threads - 1} "
            f"(or raise WEB_THREADS).",
        )
        return threads - 1
    return limit


def _max_body(reader: EnvReader, traffic_class: str) -> int:
    name = max_body_variable(traffic_class)
    value = reader.raw(name) or SCHEMA_BY_NAME[name].default or "0"
    size = parse_size(value)
    if size is None or size > MAX_BODY_CEILING:
        reader.error(name, f"{value!r} is not a size up to 1g; use bytes or k/m, e.g. 65536, 64k or 2m.")
        return parse_size(SCHEMA_BY_NAME[name].default or "0") or 0
    return size


def _default_seconds(name: str) -> float:
    parsed = parse_duration(SCHEMA_BY_NAME[name].default or "0")
    return parsed.total_seconds() if parsed else 0.0
