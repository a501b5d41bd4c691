"""Per-phase statistics, text and markdown tables, and the latency-over-time plot of a failover run.

Latency percentiles (nearest rank) are over every request of the kind in the phase, errors and timeouts
included (a client waits for a 503 or a timeout too); a timed-out request counts with the time it waited.

The *longest dip* of a phase is the longest stretch of it, from its start to its end, in which no request
completed (any answer, an error too, or a client timeout; requests sent in an earlier phase count, as they
free a client): the time the clients were all stuck. At the default load (~40 answers/s from 6 clients) a
healthy phase shows ~0.1-0.2 s.

Everything here is computed from ``requests.jsonl`` and ``meta.json`` (``--report`` re-renders any run; the
outcome of each request is recomputed from its status and code, so older runs get the newer categories).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "bench-failover"
X = "\u00d7"
OUTCOMES = ("ok", "4xx", "read_only_mode", "outcome_unknown", "unavailable", "5xx", "timeout", "conn_error")
FAILED_CONNECTION = ("timeout", "conn_error")
EXPECTED_503 = ("read_only_mode", "outcome_unknown")
SLOW_SECONDS = 1.0


def outcome_of(status: int, code: str) -> str:
    """``ok`` (< 400), ``4xx``, ``read_only_mode`` / ``outcome_unknown`` / ``unavailable`` (503 by code), ``5xx``."""
    if status < 400:
        return "ok"
    if status < 500:
        return "4xx"
    if status == 503 and code in EXPECTED_503:
        return code
    if status == 503:
        return "unavailable"
    return "5xx"


def error_key(record: dict[str, Any]) -> str | None:
    """What failed, for the errors-by-code table: ``503 read_only_mode``, ``timeout ReadTimeout``, ... (None: ok)."""
    if record["outcome"] == "ok":
        return None
    if record["status"] is None:
        return f"{record['outcome']} {record['code'] or '?'}"
    return f"{record['status']} {record['code'] or '-'}"


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


@dataclass
class Result:
    """A whole run: its ``meta.json`` and one :class:`Run` per mode."""

    meta: dict[str, Any]
    modes: list[Run]


def load(folder: Path) -> Result:
    meta = json.loads((folder / "meta.json").read_text())
    records: dict[str, list[dict[str, Any]]] = {}
    with (folder / "requests.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            if record.get("status") is not None:
                record["outcome"] = outcome_of(record["status"], record.get("code") or "")
            records.setdefault(record["mode"], []).append(record)
    modes = [
        Run(mode, m["phases"], m["events"], records.get(mode, []), m.get("log_findings", {}), m.get("loadavg", {}))
        for mode, m in meta["modes"].items()
    ]
    return Result(meta, modes)


def longest_dip(records: list[dict[str, Any]], start: float, end: float) -> tuple[float, float]:
    """(length, start) of the longest stretch of [start, end] in which none of ``records`` completed."""
    done = sorted(t for r in records if start <= (t := r["t"] + r["latency"]) <= end)
    best, at = 0.0, start
    for before, after in zip([start, *done], [*done, end], strict=True):
        if after - before > best:
            best, at = after - before, before
    return best, at


def phase_stats(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    reads = [r for r in records if r["kind"] == "read"]
    writes = [r for r in records if r["kind"] == "write"]
    outcomes = Counter(r["outcome"] for r in records)
    write_outcomes = Counter(r["outcome"] for r in writes)
    writes_201 = sum(r["status"] == 201 for r in writes)
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
        "reads_slow": sum(r["latency"] > SLOW_SECONDS for r in reads),
        "writes_201": writes_201,
        "writes_read_only": write_outcomes["read_only_mode"],
        "writes_unknown": write_outcomes["outcome_unknown"],
        "writes_other": len(writes) - writes_201 - write_outcomes["read_only_mode"] - write_outcomes["outcome_unknown"],
        "errors": Counter(key for r in records if (key := error_key(r))),
        "dip": None,  # (seconds, start) -- table_rows sets it: it needs the records of every phase
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
            stats = phase_stats(records, span["end"] - span["start"])
            length, at = longest_dip(run.records, span["start"], span["end"])
            stats["dip"] = (length, at - span["start"])
            rows.append((titles[name], run.mode, stats))
    for run in runs:
        seconds = sum(p["end"] - p["start"] for p in run.phases)
        stats = phase_stats(run.records, seconds)
        if run.phases:
            length, at = longest_dip(run.records, run.phases[0]["start"], run.phases[-1]["end"])
            stats["dip"] = (length, at)
        rows.append(("all phases", run.mode, stats))
    return rows


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    ms = value * 1000
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"


def _dip(stats: dict[str, Any]) -> str:
    if stats["dip"] is None:
        return "-"
    length, at = stats["dip"]
    return f"{length:.2f} s @{at:.1f}"


Column = tuple[str, Callable[[str, str, dict[str, Any]], str]]

OUTCOME_COLUMNS: tuple[Column, ...] = (
    ("phase", lambda t, m, s: t),
    ("mode", lambda t, m, s: m),
    ("req", lambda t, m, s: str(s["requests"])),
    ("req/s", lambda t, m, s: f"{s['rps']:.1f}"),
    ("GETs failed", lambda t, m, s: f"{s['reads_failed']}/{s['reads']}"),
    ("writes", lambda t, m, s: str(s["writes"])),
    ("201", lambda t, m, s: str(s["writes_201"])),
    ("503 read_only", lambda t, m, s: str(s["writes_read_only"])),
    ("503 unknown", lambda t, m, s: str(s["writes_unknown"])),
    ("other", lambda t, m, s: str(s["writes_other"])),
    ("stale", lambda t, m, s: str(s["stale"])),
)
LATENCY_COLUMNS: tuple[Column, ...] = (
    ("phase", lambda t, m, s: t),
    ("mode", lambda t, m, s: m),
    ("GET p50 ms", lambda t, m, s: _ms(s["read_p50"])),
    ("GET p99 ms", lambda t, m, s: _ms(s["read_p99"])),
    ("GET max ms", lambda t, m, s: _ms(s["read_max"])),
    ("GETs > 1 s", lambda t, m, s: str(s["reads_slow"])),
    ("write p50 ms", lambda t, m, s: _ms(s["write_p50"])),
    ("write p99 ms", lambda t, m, s: _ms(s["write_p99"])),
    ("longest dip", lambda t, m, s: _dip(s)),
)
RECOVERY_HEADER = ("phase", "mode", "events", "requests > 1 s", "max ms", "hurt until", "writes back")

OUTCOME_NOTE = (
    "Requests and outcomes. GETs failed: x of y; writes (POST /api/cart/items/) by answer: 201, 503 read_only_mode "
    "(refused, nothing written), 503 outcome_unknown (cut off, may have committed), other (any other status, "
    "client timeout, connection error); stale: X-Data-Stale answers."
)
LATENCY_NOTE = (
    "Latency and throughput. Percentiles: nearest rank over every request of the kind, errors included; GETs > 1 s: "
    "GETs that took over a second to answer; longest dip: the longest stretch of the phase with no request "
    "completed (any answer or client timeout), and when it began, in seconds into the phase."
)
ERRORS_NOTE = "Errors by code: every request (GET or write) that did not get a 2xx/3xx, by status and error code."
RECOVERY_NOTE = (
    "Recovery: hurt until = when the last request that failed (other than 503 read_only_mode) or took over 1 s "
    "ended, in seconds into the phase; writes back = seconds from the node coming back to the first successful "
    "write sent after it and after the last failed write."
)


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


def _cells(columns: tuple[Column, ...], rows: list[tuple[str, str, dict[str, Any]]]) -> list[list[str]]:
    return [[fn(title, mode, stats) for _, fn in columns] for title, mode, stats in rows]


def error_table(rows: list[tuple[str, str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the errors-by-code table: one column per status + code seen anywhere in the run."""
    codes = sorted({code for _, _, stats in rows for code in stats["errors"]})
    header = ["phase", "mode", *codes] if codes else ["phase", "mode", "errors"]
    cells = []
    for title, mode, stats in rows:
        counts = [str(stats["errors"].get(code, 0)) for code in codes] if codes else ["0"]
        cells.append([title, mode, *counts])
    return header, cells


def p99_ratios(runs: list[Run]) -> list[str]:
    """Per fault phase, one line: GET p99 of resilient and naive, and resilient ÷ naive."""
    by_mode = {run.mode: run for run in runs}
    if not {"resilient", "naive"} <= by_mode.keys():
        return []
    lines = []
    for span in by_mode["resilient"].phases:
        if not span.get("fault"):
            continue
        p99 = {}
        for mode in ("resilient", "naive"):
            reads = [r["latency"] for r in by_mode[mode].records if r["phase"] == span["name"] and r["kind"] == "read"]
            p99[mode] = percentile(reads, 99)
        res, nai = p99["resilient"], p99["naive"]
        ratio = f"{res / nai:.2f}" if res is not None and nai else "-"
        lines.append(f"{span['title']}: GET p99 resilient {_ms(res)} ms ÷ naive {_ms(nai)} ms = {ratio}")
    return lines


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
    rows = table_rows(runs)
    header, errors = error_table(rows)

    def note(text: str) -> list[str]:
        return ["", *textwrap.wrap(text, 110), ""]

    lines = note(OUTCOME_NOTE)[1:] + _aligned([name for name, _ in OUTCOME_COLUMNS], _cells(OUTCOME_COLUMNS, rows), 2)
    lines += note(LATENCY_NOTE) + _aligned([name for name, _ in LATENCY_COLUMNS], _cells(LATENCY_COLUMNS, rows), 2)
    lines += note(ERRORS_NOTE) + _aligned(header, errors, 2)
    lines += note(RECOVERY_NOTE) + _aligned(list(RECOVERY_HEADER), recovery_rows(runs), numeric_from=3)
    ratios = p99_ratios(runs)
    if ratios:
        lines += ["", "GET p99 per fault phase, resilient ÷ naive (below 1: resilient is faster):", *ratios]
    lines += [""]
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
    rows = table_rows(runs)
    header, errors = error_table(rows)
    lines = [OUTCOME_NOTE, "", *_markdown([name for name, _ in OUTCOME_COLUMNS], _cells(OUTCOME_COLUMNS, rows), 2)]
    lines += ["", LATENCY_NOTE, "", *_markdown([n for n, _ in LATENCY_COLUMNS], _cells(LATENCY_COLUMNS, rows), 2)]
    lines += ["", ERRORS_NOTE, "", *_markdown(header, errors, 2)]
    lines += ["", RECOVERY_NOTE, "", *_markdown(list(RECOVERY_HEADER), recovery_rows(runs), numeric_from=3)]
    ratios = p99_ratios(runs)
    if ratios:
        lines += ["", "GET p99 per fault phase, resilient ÷ naive (below 1: resilient is faster):", ""]
        lines += [f"- {line}" for line in ratios]
    return "\n".join(lines)


def text_report(result: Result) -> str:
    return text_table(result.modes)


# ----------------------------------------------------------------------------------------------------------
# The section of docs/benchmarks.md, with the targets (reported, not asserted)
# ----------------------------------------------------------------------------------------------------------

READ_P99_TARGET = 0.1  # GET p99 while the replica is hung, resilient ÷ naive
REFUSAL_P99_TARGET = 0.100  # seconds: writes refused during a primary outage, after the first refusal
PRIMARY_OUTAGES = ("primary_hung", "primary_killed", "promoted")


def _span(run: Run, name: str) -> dict[str, Any] | None:
    return next((p for p in run.phases if p["name"] == name), None)


def _read_p99(run: Run, name: str) -> float | None:
    return percentile([r["latency"] for r in run.records if r["phase"] == name and r["kind"] == "read"], 99)


def refusals_after_first(run: Run, name: str) -> list[float]:
    """Latencies of the writes of phase ``name`` sent while the primary was out, after the first refusal.

    The window opens when the first ``503 read_only_mode`` of the phase was answered (the writes already in
    flight then waited for the fault to be noticed: that is the detection, not the refusal) and closes at the
    phase's second event (the replica promoted), or the phase's end.
    """
    span = _span(run, name)
    if span is None:
        return []
    writes = [r for r in run.records if r["phase"] == name and r["kind"] == "write"]
    refused = [r["t"] + r["latency"] for r in writes if r["outcome"] == "read_only_mode"]
    if not refused:
        return []
    events = [e["t"] for e in run.events if span["start"] <= e["t"] < span["end"]]
    closes = events[1] if len(events) > 1 else span["end"]
    return [r["latency"] for r in writes if min(refused) <= r["t"] < closes]


def target_rows(result: Result) -> list[list[str]]:
    """The issue's failover targets: what was measured, and whether it was met."""
    by_mode = {run.mode: run for run in result.modes}
    resilient, naive = by_mode.get("resilient"), by_mode.get("naive")
    if resilient is None:
        return []
    rows = []
    faults = [p["name"] for p in resilient.phases if p.get("fault")]
    reads = [r for r in resilient.records if r["phase"] in faults and r["kind"] == "read"]
    failed = sum(r["outcome"] != "ok" for r in reads)
    rows.append(
        [
            "0 failed GETs through every single-node fault",
            f"{failed} of {len(reads)} GETs in the {len(faults)} fault phases",
            "met" if failed == 0 else "**missed**",
        ]
    )
    if naive is not None and _span(resilient, "replica_hung") and _span(naive, "replica_hung"):
        res, nai = _read_p99(resilient, "replica_hung"), _read_p99(naive, "replica_hung")
        if res is not None and nai:
            rows.append(
                [
                    f"GET p99 while the replica is hung ≤ {READ_P99_TARGET:g} {X} naive",
                    f"{res / nai:.2f} ({_ms(res)} ÷ {_ms(nai)} ms)",
                    "met" if res / nai <= READ_P99_TARGET else "**missed**",
                ]
            )
    for name in PRIMARY_OUTAGES:
        span = _span(resilient, name)
        latencies = refusals_after_first(resilient, name)
        if span is None or not latencies:
            continue
        p99 = percentile(latencies, 99) or 0.0  # never None: latencies is not empty
        rows.append(
            [
                f"{span['title']}: writes refused in ≤ {REFUSAL_P99_TARGET * 1000:.0f} ms p99 after the first",
                f"p99 {_ms(p99)} ms over {len(latencies)} writes",
                "met" if p99 <= REFUSAL_P99_TARGET else "**missed**",
            ]
        )
    return rows


def section(result: Result) -> str:
    """The run's part of docs/benchmarks.md: when, on what, the exact command, the tables, the targets, the plot."""
    meta = result.meta
    args = meta["args"]
    commits = sorted({m.get("git", {}).get("commit", "?")[:7] for m in meta["modes"].values()})
    loads = "; ".join(
        f"{run.mode} {run.loadavg.get('before', ['?'])[0]} → {run.loadavg.get('after', ['?'])[0]}"
        for run in result.modes
    )
    dirty = sorted({f for m in meta["modes"].values() for f in m.get("git", {}).get("changed_files", [])})
    lines = [
        f"### Results ({meta['created'][:16].replace('T', ' ')} UTC, commit `{', '.join(commits)}`)",
        "",
        f"Command: `{meta.get('command', 'python -m bench.failover --publish')}` — {meta.get('cpus', '?')} CPUs, "
        f"shared (1-minute load average before → after, per mode: {loads})"
        + (f"; uncommitted changes to {', '.join(dirty)}" if dirty else "")
        + f". {args['threads']} client threads at {args['rate']:g} requests/s in all, "
        f"{args['write_share']:.0%} writes, {args['phase_seconds']:g} s per phase after {args['warmup']:g} s of "
        f"warm-up; gunicorn 2 workers {X} 4 threads. Nothing is pinned: the server, the stack and the paced "
        "client share both cores.",
        "",
        "**Targets** (reported, not asserted):",
        "",
        "| target | measured (resilient) | |",
        "|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in target_rows(result)),
        "",
        markdown_table(result.modes),
        "",
        "Gunicorn logs: "
        + "; ".join(
            f"{run.mode} {', '.join(f'{k} {v}' for k, v in run.log_findings.items()) or 'nothing'}"
            for run in result.modes
        )
        + ".",
        "",
        "![Latency over time, resilient and naive, with the fault phases shaded](bench/failover_latency.png)",
        "",
    ]
    return "\n".join(lines)


_ACCESS_STATUS = re.compile(r'" (\d{3}) ')


def scan_log(path: Path) -> dict[str, int]:
    """What gunicorn's log says: 5xx answers, tracebacks, worker timeouts, node state changes, re-runs, replicas
    taken out of the read rotation as slow."""
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
        if "db_replica_slow:" in line:
            counts["replica_slow"] += 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------------------

STYLE = {
    "ok_read": {"color": "#1f77b4", "marker": ".", "label": "GET ok"},
    "ok_write": {"color": "#2ca02c", "marker": ".", "label": "write ok"},
    "ok_slow": {"color": "#17becf", "marker": "o", "label": "2xx, > 1 s"},
    "read_only_mode": {"color": "#ff7f0e", "marker": "^", "label": "503 read_only_mode"},
    "outcome_unknown": {"color": "#e377c2", "marker": "D", "label": "503 outcome_unknown"},
    "unavailable": {"color": "#9467bd", "marker": "v", "label": "503 other"},
    "5xx": {"color": "#d62728", "marker": "X", "label": "other 5xx"},
    "4xx": {"color": "#8c564b", "marker": "s", "label": "4xx"},
    "timeout": {"color": "#000000", "marker": "x", "label": "timeout / conn error"},
}
MODE_COLORS = {"resilient": "#1f77b4", "naive": "#d62728"}
DIP_SHOWN = 0.5  # seconds: a phase's longest dip is drawn when at least this long


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
                textwrap.fill(phase["title"], 16),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    for event in events:
        ax.axvline(event["t"], color="#d62728", lw=0.8, ls="--", alpha=0.7)


def plot(result: Result, path: Path) -> Path:
    """Latency over time, one panel per mode, plus answered requests per second of both modes overlaid.

    Each request is a point at the time it was sent; phases are shaded and named, fault events dashed, and a
    phase's longest dip (no request completed, at least ``DIP_SHOWN`` seconds) is a grey bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result.modes
    phases = max((len(run.phases) for run in runs), default=1)
    fig, axes = plt.subplots(
        len(runs) + 1,
        1,
        figsize=(max(14.0, 1.3 * phases), 3.9 * len(runs) + 2.8),
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
        dips = [(span, longest_dip(run.records, span["start"], span["end"])) for span in run.phases]
        dips = [(span, length, at) for span, (length, at) in dips if length >= DIP_SHOWN]
        for i, (_, length, at) in enumerate(dips):
            label = f"longest dip of a phase, >= {DIP_SHOWN} s (no request completed)" if i == 0 else None
            ax.hlines(4.2, at, at + length, colors="#444444", lw=4, alpha=0.8, label=label)
            ax.text(at + length / 2, 4.9, f"{length:.1f} s", ha="center", va="bottom", fontsize=7, color="#444444")
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
    ax.set_xlabel(
        "seconds since the schedule started (shaded: fault phases; dashed red: fault applied / node back; grey bar: "
        "the longest stretch of a phase without an answer)"
    )
    ax.set_xlim(0, end)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
