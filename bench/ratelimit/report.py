"""Statistics, tables and the plot of a rate-limit cost run.

A request counts for its mode only when its response showed that mode (``observed``) and had the endpoint's
expected status; the others (none are expected after the warm-up) are reported as "excluded".
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "bench-ratelimit"
X = "\u00d7"
MODES = ("redis", "memory", "off")
MODE_TITLES = {"redis": "Redis", "memory": "memory (Redis killed)", "off": "limits off"}
ENDPOINT_TITLES = {
    "product": "GET /api/products/{id}/ (1 scope)",
    "refresh": "POST /api/auth/token/refresh/ (2 scopes)",
    "enforce:api": "limiter alone, in process (1 scope)",
    "enforce:api+refresh": "limiter alone, in process (2 scopes)",
}


@dataclass
class Run:
    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Row:
    endpoint: str
    mode: str
    n: int
    excluded: int
    median: float  # ms
    p90: float
    p99: float
    round_medians: list[float]


def load(path: Path) -> Run:
    records = [json.loads(line) for line in (path / "requests.jsonl").read_text().splitlines() if line.strip()]
    return Run(path, records, json.loads((path / "meta.json").read_text()))


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "5xx": len(re.findall(r'HTTP/[\d.]+" 5\d\d ', text)),
        "tracebacks": text.count("Traceback"),
        "cache_redis_down": text.count("cache_redis_down:"),
        "cache_redis_up": text.count("cache_redis_up:"),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rows(run: Run) -> list[Row]:
    expected = {e["name"]: e["expected_status"] for e in run.meta["endpoints"]}
    expected.update(
        {name: 0 for name in dict.fromkeys(r["endpoint"] for r in run.records) if name.startswith("enforce:")}
    )
    result = []
    for endpoint in expected:
        for mode in MODES:
            mine = [r for r in run.records if r["endpoint"] == endpoint and r["mode"] == mode]
            good = [r for r in mine if r["observed"] == mode and r["status"] == expected[endpoint]]
            if not good:
                continue
            latencies = [r["latency"] * 1000 for r in good]
            rounds = sorted({r["round"] for r in good})
            round_medians = [statistics.median(r["latency"] * 1000 for r in good if r["round"] == n) for n in rounds]
            result.append(
                Row(
                    endpoint,
                    mode,
                    len(good),
                    len(mine) - len(good),
                    statistics.median(latencies),
                    percentile(latencies, 90),
                    percentile(latencies, 99),
                    round_medians,
                )
            )
    return result


def _versus_off(row: Row, table: list[Row]) -> tuple[str, str]:
    off = next((r for r in table if r.endpoint == row.endpoint and r.mode == "off"), None)
    if off is None or row.mode == "off":
        return "1.00", "-"
    if row.endpoint.startswith("enforce:"):  # "off" returns at once: a ratio to it means nothing
        return "-", "+" + ms(row.median - off.median)
    delta = row.median - off.median
    return f"{row.median / off.median:.2f}", ("+" if delta >= 0 else "") + ms(delta)


def ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def _cells(row: Row, table: list[Row]) -> list[str]:
    ratio, delta = _versus_off(row, table)
    spread = f"{ms(min(row.round_medians))}-{ms(max(row.round_medians))}"
    return [
        ENDPOINT_TITLES.get(row.endpoint, row.endpoint),
        MODE_TITLES[row.mode],
        str(row.n),
        ms(row.median),
        ms(row.p90),
        ms(row.p99),
        spread,
        ratio,
        delta,
        str(row.excluded),
    ]


HEADERS = [
    "endpoint",
    "mode",
    "n",
    "median ms",
    "p90 ms",
    "p99 ms",
    "round medians ms",
    "median / off",
    "median - off ms",
    "excluded",
]


def markdown_table(run: Run) -> str:
    table = rows(run)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(HEADERS) - 2)) + "|"]
    previous = None
    for row in table:
        cells = _cells(row, table)
        if row.endpoint == previous:
            cells[0] = ""
        else:
            cells[0] = f"**{cells[0]}**"
        previous = row.endpoint
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(run: Run) -> str:
    table = rows(run)
    body = [HEADERS] + [_cells(row, table) for row in table]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in body]
    meta = run.meta
    lines.append(
        f"\n{meta['args']['rounds']} rounds x {meta['args']['requests']} requests per endpoint and mode; "
        f"{meta['workers']} workers; load average before {meta['loadavg']['before']}, after "
        f"{meta['loadavg']['after']}; server logs {meta['log_findings']}"
    )
    return "\n".join(lines)


def text_report(run: Run) -> str:
    return text_table(run)


def section(run: Run) -> str:
    """The run's part of docs/benchmarks.md (the description and the reading around it are written by hand)."""
    meta = run.meta
    dirty = meta["git"].get("changed_files") or []
    lines = [
        "### Results",
        "",
        f"Run of {meta['created'][:16].replace('T', ' ')} UTC (commit `{meta['git']['commit'][:7]}`"
        + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty else "")
        + f"), {meta['cpus']} CPUs, shared, load average {meta['loadavg']['before'][0]} before and "
        f"{meta['loadavg']['after'][0]} after; {meta['args']['rounds']} rounds {X} {meta['args']['requests']} "
        f"requests per endpoint and mode, {meta['args']['calls']} in-process calls per mode and round. Command: "
        f"`{meta.get('command', 'python -m bench.ratelimit --publish')}`. Nothing is pinned: the servers, the "
        "stack and the sequential client share both cores. Server logs: "
        + "; ".join(f"{name} {findings or 'nothing'}" for name, findings in meta["log_findings"].items())
        + ".",
        "",
        markdown_table(run),
        "",
        "![Client-side latency per mode: Redis, memory (Redis killed), limits off](bench/ratelimit_cost.png)",
        "",
        "Boxes are quartiles, whiskers the 5th and 95th percentiles, of every request of the run.",
        "",
    ]
    return "\n".join(lines)


def plot(run: Run, path: Path) -> Path:
    """Latency distribution per mode, one panel per endpoint (box: quartiles, whiskers: p5-p95)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = [name for name in dict.fromkeys(r["endpoint"] for r in run.records) if not name.startswith("enforce:")]
    fig, axes = plt.subplots(1, len(endpoints), figsize=(5.2 * len(endpoints), 3.6), squeeze=False)
    colors = {"redis": "#c0392b", "memory": "#2980b9", "off": "#7f8c8d"}
    for ax, endpoint in zip(axes[0], endpoints, strict=True):
        data, labels, shown = [], [], []
        for mode in MODES:
            values = [
                r["latency"] * 1000
                for r in run.records
                if r["endpoint"] == endpoint and r["mode"] == mode and r["observed"] == mode
            ]
            if values:
                data.append(values)
                labels.append(MODE_TITLES[mode])
                shown.append(mode)
        boxes = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, mode in zip(boxes["boxes"], shown, strict=True):
            patch.set_facecolor(colors[mode])
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_title(ENDPOINT_TITLES.get(endpoint, endpoint), fontsize=9)
        ax.set_ylabel("latency ms (client side)")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
