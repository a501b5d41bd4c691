"""Per-phase statistics, text and markdown tables, and the latency-over-time plot of a failover run.

Latency percentiles are over every request of the kind in the phase, errors and timeouts included (a client
waits for a 503 or a timeout too); a timed-out request counts with the time it waited.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "4xx", "read_only_mode", "unavailable", "5xx", "timeout", "conn_error")
FAILED_CONNECTION = ("timeout", "conn_error")


def outcome_of(status: int, code: str) -> str:
    """``ok`` (< 400), ``4xx``, ``read_only_mode`` / ``unavailable`` (503 by code), ``5xx`` (anything else)."""
    if status < 400:
        return "ok"
    if status < 500:
        return "4xx"
    if status == 503 and code == "read_only_mode":
        return "read_only_mode"
    if status == 503:
        return "unavailable"
    return "5xx"


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (no interpolation), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Run:
    mode: str
    phases: list[dict[str, Any]]
    events: list[dict[str, Any]]
    records: list[dict[str, Any]]
    log_findings: dict[str, int]
    loadavg: dict[str, list[float]]


def load(folder: Path) -> list[Run]:
    meta = json.loads((folder / "meta.json").read_text())
    records: dict[str, list[dict[str, Any]]] = {}
    with (folder / "requests.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            records.setdefault(record["mode"], []).append(record)
    return [
        Run(mode, m["phases"], m["events"], records.get(mode, []), m.get("log_findings", {}), m.get("loadavg", {}))
        for mode, m in meta["modes"].items()
    ]


def phase_stats(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    reads = [r for r in records if r["kind"] == "read"]
    writes = [r for r in records if r["kind"] == "write"]
    outcomes = Counter(r["outcome"] for r in records)
    return {
        "requests": len(records),
        "rps": len(records) / seconds if seconds else 0.0,
        "reads": len(reads),
        "reads_failed": sum(r["outcome"] != "ok" for r in reads),
        "writes": len(writes),
        "writes_ok": sum(r["outcome"] == "ok" for r in writes),
        "outcomes": dict(outcomes),
        "read_only_mode": outcomes["read_only_mode"],
        "unavailable": outcomes["unavailable"],
        "other_5xx": outcomes["5xx"],
        "client_4xx": outcomes["4xx"],
        "timeouts": sum(outcomes[o] for o in FAILED_CONNECTION),
        "stale": sum(bool(r.get("stale")) for r in records),
        "read_p50": percentile([r["latency"] for r in reads], 50),
        "read_p99": percentile([r["latency"] for r in reads], 99),
        "write_p50": percentile([r["latency"] for r in writes], 50),
        "write_p99": percentile([r["latency"] for r in writes], 99),
        "read_max": max((r["latency"] for r in reads), default=None),
    }


def table_rows(runs: list[Run]) -> list[tuple[str, str, dict[str, Any]]]:
    """(phase title, mode, stats), phase by phase with the modes side by side, then a total per mode."""
    rows = []
    titles = {}
    order: list[str] = []
    for run in runs:
        for phase in run.phases:
            titles.setdefault(phase["name"], phase["title"])
            if phase["name"] not in order:
                order.append(phase["name"])
    for name in order:
        for run in runs:
            span = next((p for p in run.phases if p["name"] == name), None)
            if span is None:
                continue
            records = [r for r in run.records if r["phase"] == name]
            rows.append((titles[name], run.mode, phase_stats(records, span["end"] - span["start"])))
    for run in runs:
        seconds = sum(p["end"] - p["start"] for p in run.phases)
        rows.append(("all phases", run.mode, phase_stats(run.records, seconds)))
    return rows


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    ms = value * 1000
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"


COLUMNS = (
    ("phase", lambda t, m, s: t),
    ("mode", lambda t, m, s: m),
    ("req", lambda t, m, s: str(s["requests"])),
    ("req/s", lambda t, m, s: f"{s['rps']:.1f}"),
    ("GETs failed", lambda t, m, s: f"{s['reads_failed']}/{s['reads']}"),
    ("writes ok", lambda t, m, s: f"{s['writes_ok']}/{s['writes']}"),
    ("503 read_only", lambda t, m, s: str(s["read_only_mode"])),
    ("503 other", lambda t, m, s: str(s["unavailable"])),
    ("other 5xx", lambda t, m, s: str(s["other_5xx"])),
    ("timeout/conn", lambda t, m, s: str(s["timeouts"])),
    ("stale", lambda t, m, s: str(s["stale"])),
    ("read p50 ms", lambda t, m, s: _ms(s["read_p50"])),
    ("read p99 ms", lambda t, m, s: _ms(s["read_p99"])),
    ("write p50 ms", lambda t, m, s: _ms(s["write_p50"])),
    ("write p99 ms", lambda t, m, s: _ms(s["write_p99"])),
)

SLOW_SECONDS = 1.0
RECOVERY_HEADER = ("phase", "mode", "events", "requests > 1 s", "max ms", "hurt until", "writes back")


def recovery_rows(runs: list[Run]) -> list[list[str]]:
    """Per fault phase and mode: how long clients felt the fault, and when writes came back.

    ``hurt until``: when the last request of the phase that failed (anything but a 2xx or an expected
    ``503 read_only_mode``) or took over a second ended, in seconds after the phase began.
    ``writes back``: for a phase in which a node came back (started, promoted), seconds from that event to the
    first successful write sent after it and after the last write that failed (the load sends ~8 writes/s, so
    about 0.1 s is "at once").
    """
    rows = []
    order = [p["name"] for p in runs[0].phases] if runs else []
    for name in order:
        for run in runs:
            span = next((p for p in run.phases if p["name"] == name), None)
            if span is None:
                continue
            events = [e for e in run.events if span["start"] <= e["t"] < span["end"]]
            if not events:
                continue
            records = [r for r in run.records if r["phase"] == name]
            bad = [r for r in records if r["outcome"] not in ("ok", "read_only_mode") or r["latency"] > SLOW_SECONDS]
            hurt = max((r["t"] + r["latency"] for r in bad), default=None)
            failed_writes = [r["t"] for r in records if r["kind"] == "write" and r["outcome"] != "ok"]
            back = "-"
            if not span.get("fault", True) or len(events) > 1:  # a node came back in this phase
                since = max([events[-1]["t"], *(t for t in failed_writes if t >= events[-1]["t"])])
                first_ok = min(
                    (r["t"] for r in records if r["kind"] == "write" and r["outcome"] == "ok" and r["t"] > since),
                    default=None,
                )
                back = "never" if first_ok is None else f"{first_ok - events[-1]['t']:.2f} s"
            rows.append(
                [
                    span["title"],
                    run.mode,
                    ", ".join(f"{e['label']} @{e['t']:.1f}s" for e in events),
                    str(sum(r["latency"] > SLOW_SECONDS for r in records)),
                    _ms(max((r["latency"] for r in records), default=None)),
                    "-" if hurt is None else f"{hurt - span['start']:.1f} s",
                    back,
                ]
            )
    return rows


def _cells(runs: list[Run]) -> list[list[str]]:
    return [[fn(title, mode, stats) for _, fn in COLUMNS] for title, mode, stats in table_rows(runs)]


def _aligned(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            lines.append("")
        previous = row[0]
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(cells)))
    return lines


def text_table(runs: list[Run]) -> str:
    lines = _aligned([name for name, _ in COLUMNS], _cells(runs), numeric_from=2)
    lines += ["", *_aligned(list(RECOVERY_HEADER), recovery_rows(runs), numeric_from=3), ""]
    lines += [f"{run.mode}: gunicorn log {run.log_findings}; machine load average {run.loadavg}" for run in runs]
    return "\n".join(lines)


def _markdown(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i >= numeric_from else "---" for i in range(len(header))) + "|",
    ]
    previous = None
    for row in rows:
        shown = list(row)
        shown[0] = "" if row[0] == previous else f"**{row[0]}**"
        previous = row[0]
        lines.append("| " + " | ".join(shown) + " |")
    return lines


def markdown_table(runs: list[Run]) -> str:
    lines = _markdown([name for name, _ in COLUMNS], _cells(runs), numeric_from=2)
    lines += ["", *_markdown(list(RECOVERY_HEADER), recovery_rows(runs), numeric_from=3)]
    return "\n".join(lines)


_ACCESS_STATUS = re.compile(r'" (\d{3}) ')


def scan_log(path: Path) -> dict[str, int]:
    """What gunicorn's log says: 5xx answers, tracebacks, worker timeouts, node state changes, re-runs."""
    counts: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    for line in text.splitlines():
        match = _ACCESS_STATUS.search(line)
        if match and match.group(1).startswith("5"):
            counts[f"access_{match.group(1)}"] += 1
        if "Traceback" in line:
            counts["traceback"] += 1
        if "WORKER TIMEOUT" in line:
            counts["worker_timeout"] += 1
        if "database node down" in line:
            counts["node_down"] += 1
        if "database node up" in line:
            counts["node_up"] += 1
        if "re-running" in line:
            counts["request_rerun"] += 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------------------

STYLE = {
    "ok_read": {"color": "#1f77b4", "marker": ".", "label": "GET ok"},
    "ok_write": {"color": "#2ca02c", "marker": ".", "label": "write ok"},
    "ok_slow": {"color": "#17becf", "marker": "o", "label": "2xx, > 1 s"},
    "read_only_mode": {"color": "#ff7f0e", "marker": "^", "label": "503 read_only_mode"},
    "unavailable": {"color": "#9467bd", "marker": "v", "label": "503 other"},
    "5xx": {"color": "#d62728", "marker": "X", "label": "other 5xx"},
    "4xx": {"color": "#8c564b", "marker": "s", "label": "4xx"},
    "timeout": {"color": "#000000", "marker": "x", "label": "timeout / conn error"},
}
MODE_COLORS = {"resilient": "#1f77b4", "naive": "#d62728"}


def _style_key(record: dict[str, Any]) -> str:
    outcome = record["outcome"]
    if outcome == "ok":
        return "ok_slow" if record["latency"] > SLOW_SECONDS else f"ok_{record['kind']}"
    return "timeout" if outcome in FAILED_CONNECTION else outcome


def _shade(ax: Any, phases: list[dict[str, Any]], events: list[dict[str, Any]], titles: bool) -> None:
    for i, phase in enumerate(phases):
        if phase.get("fault", i % 2):  # runs before the flag was recorded: every other phase
            ax.axvspan(phase["start"], phase["end"], color="#d62728", alpha=0.07, lw=0)
        if titles:
            ax.text(
                (phase["start"] + phase["end"]) / 2,
                1.0,
                phase["title"].replace(" + ", "\n+ "),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    for event in events:
        ax.axvline(event["t"], color="#d62728", lw=0.8, ls="--", alpha=0.7)


def plot(runs: list[Run], path: Path) -> Path:
    """Latency over time, one panel per mode, plus answered requests per second of both modes overlaid.

    Each request is a point at the time it was sent; phases are shaded and named, fault events dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(runs) + 1,
        1,
        figsize=(14, 3.9 * len(runs) + 2.6),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3] * len(runs) + [1.6]},
    )
    end = max((p["end"] for run in runs for p in run.phases), default=1.0)
    for ax, run in zip(axes[:-1, 0], runs, strict=True):
        _shade(ax, run.phases, run.events, titles=True)
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in run.records:
            groups.setdefault(_style_key(record), []).append(record)
        for key, style in STYLE.items():
            points = groups.get(key)
            if not points:
                continue
            small = key in ("ok_read", "ok_write")
            ax.scatter(
                [r["t"] for r in points],
                [max(r["latency"] * 1000, 1.0) for r in points],
                s=6 if small else 24,
                c=style["color"],
                marker=style["marker"],
                label=f"{style['label']} ({len(points)})",
                alpha=0.55 if small else 0.9,
                linewidths=0.8,
            )
        ax.set_yscale("log")
        ax.set_ylim(3, 30_000)
        ax.set_ylabel("latency, ms (log)")
        ax.set_title(f"DB_FAILOVER_MODE={run.mode}", loc="left", fontsize=10, pad=24, fontweight="bold")
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.legend(loc="upper right", fontsize=7.5, ncol=4, framealpha=0.9)
    ax = axes[-1, 0]
    _shade(ax, runs[0].phases, [], titles=False)
    for run in runs:
        bins = [0] * int(end)
        for record in run.records:
            if 0 <= record["t"] < len(bins):
                bins[int(record["t"])] += 1
        ax.step(range(len(bins)), bins, where="post", color=MODE_COLORS.get(run.mode), lw=1.2, label=run.mode)
    ax.set_ylabel("requests sent / s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8, ncol=len(runs), framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlabel("seconds since the schedule started (shaded: fault phases; dashed red: fault applied / node back)")
    ax.set_xlim(0, end)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
