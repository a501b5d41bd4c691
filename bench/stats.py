"""The statistics every benchmark report uses, in one place: nearest-rank quantiles, a median that skips the
NaNs of empty cells, and the raw ``*.jsonl`` records a run leaves."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def quantile(values: list[float], q: float) -> float:
    """Nearest rank (no interpolation: a p99 is a request that happened); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def median(values: list[float]) -> float:
    """The median of the values that are numbers (NaN, an empty cell, is left out); NaN for none."""
    numbers = [v for v in values if v == v]
    return statistics.median(numbers) if numbers else float("nan")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One record per non-empty line; [] when the file does not exist."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
