"""Redis round trips per operation: ``bulwark_redis_round_trips_total{purpose}`` read from a server's ``/metrics``
(summed over its workers: prometheus_client's multiprocess mode) around each block's measured part (after its
warm-up; :class:`bench.hotpaths.run.BlockMeter`).

The counter is bumped wherever the layer talks to Redis (the fallback cache's calls, the rate limiter's script,
the worker snapshots' pipeline and reads, the cache's recovery probe), labelled by what for
(``resilience/cache/purposes.py``). A block's increase divided by its operations is what one operation costs in
Redis, the layer's background threads (snapshot publisher, node-trip reads) included; the scrapes themselves fall
outside the blocks' CPU readings. The baseline (``settings.baseline``) keeps the same cache, so its own round trips
(an authenticated request's user lookup, none for an anonymous read) show too.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from bench.stats import median

METRIC = "bulwark_redis_round_trips_total"
_LINE = re.compile(rf'^{METRIC}{{purpose="([^"]+)"}} ([0-9.e+-]+)$', re.MULTILINE)


def scrape(url: str, timeout: float = 10.0) -> dict[str, float] | None:
    """purpose -> round trips so far on this server; None when ``/metrics`` did not answer."""
    try:
        response = requests.get(f"{url}/metrics", timeout=timeout)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    return {purpose: float(value) for purpose, value in _LINE.findall(response.text)}


def per_operation(before: dict[str, float] | None, after: dict[str, float] | None, operations: int) -> dict[str, float]:
    """purpose -> round trips per operation over a block; {} when a scrape failed."""
    if before is None or after is None or operations <= 0:
        return {}
    return {
        purpose: round((after[purpose] - before.get(purpose, 0.0)) / operations, 4)
        for purpose in sorted(after)
        if after[purpose] - before.get(purpose, 0.0) > 0
    }


def total(trips: dict[str, float]) -> float:
    return sum(trips.values())


def summarise(blocks: list[dict[str, Any]], config: str, path: str) -> dict[str, float] | None:
    """Median per purpose over the rounds' blocks of (config, path); None when no block has the reading."""
    readings = [b["redis_trips"] for b in blocks if (b["config"], b["path"]) == (config, path) and "redis_trips" in b]
    if not readings:
        return None
    purposes = sorted({purpose for reading in readings for purpose in reading})
    return {purpose: median([reading.get(purpose, 0.0) for reading in readings]) for purpose in purposes}
