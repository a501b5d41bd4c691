"""Statistics, tables and the plot of an observability benchmark run: per mode the latency quantiles over all
rounds, the median of the rounds' p99, and the ratio of each to the baseline measured in the same rounds."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "bench-observability"
MODES = ("baseline", "stalled_log_sink", "dead_collector", "hung_collector")
TITLES = {
    "baseline": "baseline (disk and both collectors fine)",
    "stalled_log_sink": "log sink stalled (writes block)",
    "dead_collector": "one collector dead (refused)",
    "hung_collector": "one collector hung (never answers)",
}


@dataclass
class Run:
    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Row:
    mode: str
    n: int
    errors: int
    p50: float  # ms
    p99: float
    worst: float
    round_p99: float  # median over the rounds of each round's p99


def load(path: Path) -> Run:
    records = [json.loads(line) for line in (path / "requests.jsonl").read_text().splitlines() if line.strip()]
    return Run(path, records, json.loads((path / "meta.json").read_text()))


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {"5xx": len(re.findall(r'"status": 5\d\d|HTTP/[\d.]+" 5\d\d ', text)), "tracebacks": text.count("Traceback")}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rows(run: Run) -> list[Row]:
    result = []
    for mode in MODES:
        mine = [r for r in run.records if r["mode"] == mode]
        ok = [r["latency"] * 1000 for r in mine if r["status"] == 200]
        rounds = sorted({r["round"] for r in mine})
        per_round = [
            _quantile([r["latency"] * 1000 for r in mine if r["round"] == n and r["status"] == 200], 0.99)
            for n in rounds
        ]
        result.append(
            Row(
                mode,
                len(mine),
                len(mine) - len(ok),
                statistics.median(ok),
                _quantile(ok, 0.99),
                max(ok),
                statistics.median(per_round),
            )
        )
    return result


def _evidence(run: Run, mode: str) -> str:
    found = run.meta["evidence"][mode]
    dropped_logs = sum(v for k, v in found.items() if k.startswith("bulwark_log_records_dropped_total"))
    dropped_spans = sum(v for k, v in found.items() if k.startswith("bulwark_spans_dropped_total"))
    down = [k for k, v in found.items() if k.startswith("bulwark_span_exporter_up") and v == 0]
    depth = found.get("bulwark_log_queue_depth", 0)
    parts = [f"log records dropped {dropped_logs:.0f}", f"log queue {depth:.0f}", f"spans dropped {dropped_spans:.0f}"]
    if down:
        parts.append(f"exporters down {len(down)}")
    return ", ".join(parts)


def _table(run: Run) -> tuple[list[str], list[list[str]]]:
    data = rows(run)
    base = data[0]
    headers = [
        "mode",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99/round (median)",
        "vs baseline",
        "what the metrics show",
    ]
    body = []
    for row in data:
        body.append(
            [
                TITLES[row.mode],
                str(row.n),
                str(row.errors),
                f"{row.p50:.1f}",
                f"{row.p99:.1f}",
                f"{row.worst:.1f}",
                f"{row.round_p99:.1f}",
                f"{row.round_p99 / base.round_p99:.2f}",
                _evidence(run, row.mode),
            ]
        )
    return headers, body


def machine_line(run: Run) -> str:
    meta = run.meta
    return (
        f"{meta['created']}, commit {meta['git']['commit'][:10]}, {meta['cpus']} CPUs, load average "
        f"{meta['loadavg']['before']} → {meta['loadavg']['after']}, {meta['args']['rounds']} rounds x "
        f"{meta['args']['requests']} requests per mode, collector exports {meta['collector_exports']}"
    )


def text_table(run: Run) -> str:
    headers, body = _table(run)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join([machine_line(run), *lines])


def text_report(run: Run) -> str:
    return text_table(run)


def section(run: Run) -> str:
    """The run's part of docs/benchmarks.md (the description and the reading around it are written by hand)."""
    headers, body = _table(run)
    data = rows(run)
    faults = data[1:]
    worst = max(faults, key=lambda row: row.round_p99 / data[0].round_p99) if faults else data[0]
    lines = [
        "### Results",
        "",
        f"Measured {machine_line(run)}. Command: `{run.meta.get('command', 'python -m bench.observability --publish')}`"
        "; nothing is pinned (the servers, the collectors, the stack and the sequential client share both cores).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(r) + " |" for r in body),
        "",
        f"Failed requests under the three faults: {sum(row.errors for row in faults)} of "
        f"{sum(row.n for row in faults)}. Highest p99 per round (median) against the baseline of the same rounds: "
        f"{worst.round_p99 / data[0].round_p99:.2f} ({TITLES[worst.mode]}).",
        "",
        "![latency per mode and p99 per round](bench/observability_faults.png)",
        "",
    ]
    return "\n".join(lines)


def plot(run: Run, path: Path) -> Path:
    """Latency distribution per mode (box: quartiles, whiskers p5-p99) and each round's p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    data = [[r["latency"] * 1000 for r in run.records if r["mode"] == m and r["status"] == 200] for m in MODES]
    labels = [TITLES[m].split(" (")[0] for m in MODES]
    left.boxplot(data, whis=(5, 99), showfliers=False, medianprops={"color": "black"})
    left.set_xticks(range(1, len(MODES) + 1), labels, fontsize=8)
    left.set_ylabel("GET /api/products/<id>/ latency ms")
    left.set_ylim(bottom=0)
    left.grid(axis="y", alpha=0.3)
    for mode in MODES:
        rounds = sorted({r["round"] for r in run.records if r["mode"] == mode})
        p99 = [
            _quantile([r["latency"] * 1000 for r in run.records if r["mode"] == mode and r["round"] == n], 0.99)
            for n in rounds
        ]
        right.plot([n + 1 for n in rounds], p99, marker="o", label=TITLES[mode].split(" (")[0])
    right.set_xlabel("round")
    right.set_ylabel("p99 ms")
    right.set_ylim(bottom=0)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
