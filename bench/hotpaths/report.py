"""Statistics, tables, the plot and the ``docs/benchmarks.md`` section of a hot-path benchmark run.

Per server (``off``, ``on-nolimits``, ``on``) and hot path:

- **app CPU per operation**: the gunicorn workers' CPU (every thread's schedstat) over a block divided by its
  operations, the median of the rounds (the figure that holds on a shared machine: what the server spends,
  whoever else runs); the ratio to ``off`` is taken round by round (the three servers of a path are measured back
  to back) and its median over the rounds given with the range;
- **throughput**: operations per second of a block (closed loop, fixed concurrency), the median of the rounds,
  and its ratio to ``off`` the same way;
- **latency**: p50 and p99 (nearest rank) over every operation of the rounds pooled, errors included;
- the client's and the stack's CPU per operation, and what else the machine ran.

Targets (reported, not asserted): the layer (``on``) costs at most 5 % on the read paths (list, detail, cart),
judged on app CPU per operation — on a server that is CPU-bound, capacity is its inverse — with the measured
throughput beside it; and at most 10 % on checkout's p99. A ``notes.md`` in the run folder (what a person read in
the profile) is added to the section as it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hotpaths import instructions, profile, redis_trips, syscalls
from bench.stats import median as _median
from bench.stats import quantile

CONFIGS = ("off", "on-nolimits", "on")
LAYER = ("on-nolimits", "on")
PATHS = ("list", "detail", "token", "cart", "checkout")
READ_PATHS = ("list", "detail", "cart")
CPU_TARGET = 1.05
P99_TARGET = 1.10
MARKER = "bench-hotpaths"
# The profile's parts, in the order of the table (bench/hotpaths/profile.py).
PROFILE_PARTS = (
    "app, Django, DRF, gunicorn",
    "PostgreSQL client (psycopg)",
    "password hashing",
    "metrics (Prometheus client)",
    "routing, read-your-writes",
    "node-aware engine",
    "rate limits",
    "serving layer",
    "monitor and snapshot threads",
)
X = "\u00d7"
TITLES = {
    "off": "off (settings.baseline)",
    "on-nolimits": "on, rate limits off",
    "on": "on (limits in Redis)",
}
PATH_TITLES = {
    "list": "GET /api/products/?page_size=20",
    "detail": "GET /api/products/{id}/",
    "token": "POST /api/auth/token/ (log-in)",
    "cart": "GET /api/cart/ (Bearer, 3 items)",
    "checkout": "checkout: POST /api/cart/items/ + POST /api/orders/",
}


@dataclass
class Run:
    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    notes: str


def load(path: Path) -> Run:
    """A run's folder; its py-spy profiles are read again from their raw files (the parts as defined now)."""
    records = [json.loads(line) for line in (path / "requests.jsonl").read_text().splitlines() if line.strip()]
    notes = (path / "notes.md").read_text().strip() if (path / "notes.md").exists() else ""
    meta = json.loads((path / "meta.json").read_text())
    for key, summary in (meta.get("profiles") or {}).items():
        raw = path / f"profile-{key.replace(':', '-')}.txt"
        if ":" in key and raw.exists():
            meta["profiles"][key] = {**profile.parse(raw), "operations": summary["operations"]}
    return Run(path, records, meta, notes)


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "500": len(re.findall(r'"status": 500\b', text)),
        "tracebacks": text.count("Traceback"),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
        "shed": text.count("serving_shed"),
    }


def rounds(run: Run) -> list[int]:
    return sorted({b["round"] for b in run.meta["blocks"]})


def paths(run: Run) -> list[str]:
    return [p for p in PATHS if p in run.meta["paths"]]


def block(run: Run, config: str, path: str, round_no: int) -> dict[str, Any] | None:
    return next(
        (b for b in run.meta["blocks"] if (b["config"], b["path"], b["round"]) == (config, path, round_no)), None
    )


def _expected(path: str, status: int) -> bool:
    return status == (201 if path == "checkout" else 200)


@dataclass
class Stat:
    operations: int
    errors: int
    cpu_ms: float  # app (workers) CPU ms per operation, median of the rounds
    cpu_rounds: list[float]
    rps: float  # operations per second, median of the rounds
    rps_rounds: list[float]
    p50: float  # ms, pooled
    p99: float
    p99_rounds: list[float]
    client_ms: float
    stack_ms: float
    master_ms: float
    cores_other: float  # cores busy outside the measured parts, median of the rounds
    order_p99: float  # checkout: the order request alone


def _per_op(b: dict[str, Any], key: str) -> float:
    return b["cpu"][key] / max(1, b["operations"]) * 1000


def stat(run: Run, config: str, path: str) -> Stat:
    blocks = [b for r in rounds(run) if (b := block(run, config, path, r)) is not None]
    samples = [s for s in run.records if s["config"] == config and s["path"] == path]
    latencies = [s["latency"] * 1000 for s in samples]
    others = []
    for b in blocks:
        c = b["cpu"]
        measured = c["workers"] + c["master"] + c["stack"] + c["client"]
        others.append(max(0.0, c.get("machine", measured) - measured) / max(c["wall"], 1e-9))
    p99_rounds = [quantile([s["latency"] * 1000 for s in samples if s["round"] == r], 0.99) for r in rounds(run)]
    orders = [s["parts"][1] * 1000 for s in samples if len(s.get("parts", [])) > 1]
    return Stat(
        operations=len(samples),
        errors=sum(1 for s in samples if not _expected(path, s["status"])),
        cpu_ms=_median([_per_op(b, "workers") for b in blocks]),
        cpu_rounds=[_per_op(b, "workers") for b in blocks],
        rps=_median([b["operations"] / b["wall"] for b in blocks]),
        rps_rounds=[b["operations"] / b["wall"] for b in blocks],
        p50=quantile(latencies, 0.5),
        p99=quantile(latencies, 0.99),
        p99_rounds=p99_rounds,
        client_ms=_median([_per_op(b, "client") for b in blocks]),
        stack_ms=_median([_per_op(b, "stack") for b in blocks]),
        master_ms=_median([_per_op(b, "master") for b in blocks]),
        cores_other=_median(others),
        order_p99=quantile(orders, 0.99) if orders else float("nan"),
    )


def round_ratios(run: Run, config: str, path: str, key: str) -> list[float]:
    """``config`` ÷ ``off`` of ``key`` (``cpu`` per operation, ``rps``), round by round."""
    found = []
    for r in rounds(run):
        a, b = block(run, config, path, r), block(run, "off", path, r)
        if a is None or b is None:
            continue
        if key == "cpu":
            found.append(_per_op(a, "workers") / max(1e-9, _per_op(b, "workers")))
        else:
            found.append((a["operations"] / a["wall"]) / max(1e-9, b["operations"] / b["wall"]))
    return found


def p99_ratio(run: Run, config: str, path: str) -> float:
    return stat(run, config, path).p99 / max(1e-9, stat(run, "off", path).p99)


# ----------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    path: str
    config: str
    measure: str
    value: float  # the ratio to off
    spread: str  # the rounds' range, or ""
    limit: float
    met: bool


def targets(run: Run) -> list[Target]:
    found = []
    for config in LAYER:
        for path in paths(run):
            if path in READ_PATHS:
                ratios = round_ratios(run, config, path, "cpu")
                value = _median(ratios)
                found.append(
                    Target(path, config, "app CPU per request", value, _range(ratios), CPU_TARGET, value <= CPU_TARGET)
                )
            elif path == "checkout":
                value = p99_ratio(run, config, path)
                per_round = [
                    a / b
                    for a, b in zip(stat(run, config, path).p99_rounds, stat(run, "off", path).p99_rounds, strict=True)
                ]
                found.append(Target(path, config, "p99", value, _range(per_round), P99_TARGET, value <= P99_TARGET))
    return found


def missed(run: Run) -> list[tuple[str, str]]:
    return [(t.path, t.config) for t in targets(run) if not t.met]


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _f(value: float) -> str:
    if value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _range(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{min(values):.2f}-{max(values):.2f}" if values else ""


def _ratio(values: list[float]) -> str:
    return f"{_median(values):.3f} ({_range(values)})" if values else "-"


def main_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = [
        "path",
        "server",
        "ops",
        "errors",
        "app CPU ms/op",
        "÷ off",
        "ops/s",
        "÷ off",
        "p50 ms",
        "p99 ms",
        "p99 ÷ off",
        "client CPU ms/op",
        "stack CPU ms/op",
    ]
    body = []
    for path in paths(run):
        for config in CONFIGS:
            s = stat(run, config, path)
            off = config == "off"
            body.append(
                [
                    f"**{path}**" if off else "",
                    TITLES[config],
                    str(s.operations),
                    str(s.errors),
                    f"{_f(s.cpu_ms)} ({_range(s.cpu_rounds)})",
                    "1" if off else _ratio(round_ratios(run, config, path, "cpu")),
                    _f(s.rps),
                    "1" if off else _ratio(round_ratios(run, config, path, "rps")),
                    _f(s.p50),
                    _f(s.p99),
                    "1" if off else f"{p99_ratio(run, config, path):.3f}",
                    _f(s.client_ms),
                    _f(s.stack_ms),
                ]
            )
    return headers, body


def target_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = ["target", "path", "server", "measured (÷ off)", "rounds", "verdict"]
    body = []
    for t in targets(run):
        limit = f"≤ {t.limit - 1:.0%} more {t.measure}"
        body.append(
            [limit, t.path, TITLES[t.config], f"{t.value:.3f}", t.spread, "**MET**" if t.met else "**NOT MET**"]
        )
    return headers, body


def redis_table(run: Run) -> tuple[list[str], list[list[str]]] | None:
    """Redis round trips per operation, by purpose (medians of the rounds); None for a run without the readings."""
    cells = {
        (path, config): redis_trips.summarise(run.meta["blocks"], config, path)
        for path in paths(run)
        for config in CONFIGS
    }
    if all(summary is None for summary in cells.values()):
        return None
    purposes = sorted({purpose for summary in cells.values() if summary for purpose in summary})
    body = []
    for path in paths(run):
        for i, config in enumerate(CONFIGS):
            summary = cells[(path, config)]
            if summary is None:
                continue
            body.append(
                [f"**{path}**" if i == 0 else "", TITLES[config], f"{redis_trips.total(summary):.2f}"]
                + [f"{summary[purpose]:.3f}" if summary.get(purpose) else "-" for purpose in purposes]
            )
    return ["path", "server", "round trips/op", *purposes], body


def profile_table(run: Run) -> tuple[list[str], list[list[str]]] | None:
    """Per profiled path and server: each part's share of the workers' samples, and that share of the run's app
    CPU per operation (``≈ ms``: py-spy counts a thread waiting for the GIL or a core as busy, so its samples are
    not CPU time; their shares are the profile, the run's CPU figure the scale)."""
    profiles = run.meta.get("profiles") or {}
    keys = [k for k in profiles if ":" in k]
    if not keys:
        return None
    present = {g for k in keys for g in profiles[k]["groups"]}
    groups = [g for g in PROFILE_PARTS if g in present] + sorted(present - set(PROFILE_PARTS))
    headers = ["path", "server", "ops profiled", "samples", *groups]
    body = []
    for key in keys:
        path, config = key.split(":", 1)
        p = profiles[key]
        total = max(1, p["samples"])
        cpu = stat(run, config, path).cpu_ms
        body.append(
            [
                path,
                TITLES[config],
                str(p["operations"]),
                str(p["samples"]),
                *(
                    f"{p['groups'].get(g, 0) / total:.1%} (≈ {p['groups'].get(g, 0) / total * cpu:.2f} ms)"
                    if p["groups"].get(g)
                    else "-"
                    for g in groups
                ),
            ]
        )
    return headers, body


def idle_ms_per_s(run: Run, config: str) -> list[float]:
    """The workers' CPU per second with no traffic, round by round (runs from before the idle readings: none)."""
    return [i["cpu_ms_per_s"] for i in run.meta.get("idle", []) if i["config"] == config]


def idle_table(run: Run) -> tuple[list[str], list[list[str]]] | None:
    """The fixed cost: each server's workers with no traffic, and what that costs an operation at the rate each read
    path ran at here; then each path's ratio to *off* with the fixed cost taken out (the per-request overhead)."""
    if not run.meta.get("idle"):
        return None
    reads = [p for p in READ_PATHS if p in paths(run)]
    headers = ["server", "no traffic: workers' CPU ms/s"]
    headers += [f"{p}: fixed ms/op (share)" for p in reads] + [f"{p}: ÷ off, fixed apart" for p in reads]
    fixed = {c: _median(idle_ms_per_s(run, c)) if idle_ms_per_s(run, c) else 0.0 for c in CONFIGS}
    per_request = {}
    for config in CONFIGS:
        for path in reads:
            st = stat(run, config, path)
            fixed_op = fixed[config] / max(st.rps, 1e-9)
            per_request[config, path] = (st.cpu_ms - fixed_op, fixed_op, fixed_op / max(st.cpu_ms, 1e-9))
    body = []
    for config in CONFIGS:
        row = [TITLES[config], f"{_f(fixed[config])} ({_range(idle_ms_per_s(run, config))})"]
        row += [f"{per_request[config, p][1]:.3f} ({per_request[config, p][2]:.1%})" for p in reads]
        row += [
            "1" if config == "off" else f"{per_request[config, p][0] / max(per_request['off', p][0], 1e-9):.3f}"
            for p in reads
        ]
        body.append(row)
    return headers, body


def _nth(every: int) -> str:
    return {1: "", 2: "2nd ", 3: "3rd "}.get(every, f"{every}th ")


def _idle_lines(run: Run) -> list[str]:
    table = idle_table(run)
    if table is None:
        return []
    args = run.meta.get("args", {})
    return [
        "### The fixed cost: the workers with no traffic",
        "",
        f"At the start of every {_nth(args.get('idle_every', 1))}round each server was left without a request for "
        f"{args.get('idle_seconds', 3):g} s and its workers' CPU read exactly (every thread's "
        "`/proc/<pid>/task/*/schedstat`): what the layer's background threads cost per second whatever the traffic "
        "-- the node monitor's probes (10 per node per second per worker), its housekeeping (operator switches, the "
        "key ring, the tasks waiting for the primary), the dashboard snapshot. Per operation it is that cost over the "
        "rate the path ran at in this run (3 closed-loop connections): a server busier than this pays less of it per "
        "request. *÷ off, fixed apart* is the per-request overhead alone: (app CPU ms/op - fixed ms/op), this "
        "server over *off*, from the medians. Medians of the rounds (range):",
        "",
        _md(*table, numbers_from=1),
        "",
    ]


def instruction_table(run: Run) -> tuple[list[str], list[list[str]]] | None:
    """The callgrind phase's table (:mod:`bench.hotpaths.instructions`), or None for a run without it."""
    measured = run.meta.get("instructions")
    if not measured or "servers" not in measured:
        return None
    native = {(c, p): stat(run, c, p).rps for c in CONFIGS for p in measured["paths"] if p in paths(run)}
    workers = int(run.meta.get("settings", {}).get("on", {}).get("WEB_CONCURRENCY", 2))
    return instructions.table(measured, native, workers, TITLES)


def _instruction_lines(run: Run) -> list[str]:
    measured = run.meta.get("instructions")
    if not measured:
        return []
    head = ["### Instructions per request: callgrind, the reading the machine cannot move", ""]
    if "skipped" in measured:
        return [*head, f"Not measured in this run: {measured['skipped']}.", ""]
    table = instruction_table(run)
    events = {c: s["log_events"] for c, s in measured["servers"].items() if s.get("log_events")}
    lines = [
        *head,
        "After the CPU rounds each server ran again, alone, under `valgrind --tool=callgrind`, with one worker "
        f"({X} 4 threads, the same settings) and one keep-alive connection: {measured['repeats']} blocks per path of "
        f"{measured['operations']} operations ({measured['checkouts']} checkouts), callgrind's counts zeroed before "
        "a block's first request and dumped after its last answer by a control thread in the worker "
        "(`bench/hotpaths/callgrind_gunicorn.py`, through callgrind's client requests). Callgrind counts every "
        "instruction the worker's process executes in user space, on a simulated CPU: the same code on the same "
        "state gives the same count whatever else the machine runs, so here a difference of 1 % is a difference "
        "in the code's work. It is not time: the kernel's work (system calls: a Redis or PostgreSQL round trip's "
        "send and receive, a timer armed) and what a cache miss costs are not in it; the CPU rounds above are "
        "the target's measure, this the cross-check that no noise can blur. The background threads' "
        f"instructions per second were read with no traffic ({measured['idle_seconds']:g} s before and after the "
        "blocks): under valgrind's slowdown they fall on a block 50-100 times more per request than at full "
        "speed, so they are taken out of each block (rate x the block's wall time) and given apart, per operation "
        "at the rate the CPU rounds ran that path at (their 2 workers). *Requests alone* is the smallest block's "
        "count per request: what lands on some blocks and not others is work on a clock -- above all a database "
        "connection reopened once a minute (`CONN_MAX_AGE`; SCRAM's key stretching alone is some 65 M "
        "instructions), which valgrind's slowdown puts on a block 50-100 times more often per request than full "
        "speed does; the blocks' median is beside it, and their spread (the largest over the smallest, less one):",
        "",
        _md(*table, numbers_from=2),  # type: ignore[misc]
        "",
    ]
    for config in LAYER:
        found = instructions.ratios(measured, config)
        reads = {p: r for p, r in found.items() if p in READ_PATHS}
        if not reads:
            continue
        within = [p for p, r in reads.items() if r <= CPU_TARGET]
        lines.append(
            f"- *{TITLES[config]}*, requests alone: "
            + ", ".join(f"{p} {r:.3f}" for p, r in found.items())
            + f"; read paths within 5 %: {', '.join(within) or 'none'}"
            + (f", not: {', '.join(sorted(set(reads) - set(within)))}" if len(within) < len(reads) else "")
            + "."
        )
    lines.append(
        "- Valgrind's slowdown and the layer's timeouts: "
        + (
            "; ".join(f"{c}: " + ", ".join(f"{n} {e}" for e, n in ev.items()) for c, ev in events.items())
            if events
            else "no node was reported down or suspect, no worker timed out, nothing was shed under callgrind"
        )
        + f" (the phase took {measured.get('seconds', 0) / 60:.1f} min)."
    )
    return [*lines, ""]


def _syscall_lines(run: Run) -> list[str]:
    measured = run.meta.get("syscalls")
    if not measured:
        return []
    head = ["### System calls and context switches per request: the kernel's side", ""]
    if "skipped" in measured:
        return [*head, f"Not counted in this run: {measured['skipped']}.", ""]
    return [
        *head,
        "What the instruction counts below leave out: the kernel's work for a request. After the rounds, each "
        "server's workers were counted by `perf stat -e raw_syscalls:sys_enter,context-switches -p <workers>` "
        "over one more block of each path (same client, same size) and over "
        f"{next(iter(measured['servers'].values()))['idle']['seconds']:.1f} s with no traffic; the no-traffic "
        "rate is taken out of the block over its time, so *per op* is the requests' own. Like instructions, these "
        "are counts, not times: the same code on the same state makes the same calls whatever else the machine "
        "runs. A system call costs a few hundred nanoseconds to a few microseconds of CPU (a send or receive on a "
        "socket the most), a context switch some microseconds more when the thread woken finds its caches cold:",
        "",
        _md(*syscalls.table(measured, TITLES), numbers_from=2),
        "",
    ]


def _text(headers: list[str], body: list[list[str]]) -> str:
    body = [[c.replace("**", "") for c in r] for r in body]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def _md(headers: list[str], body: list[list[str]], *, numbers_from: int | None = None) -> str:
    """A markdown table; the columns from ``numbers_from`` on (else the known numeric ones) right-aligned."""
    if numbers_from is not None:
        right = set(headers[numbers_from:])
    else:
        right = {"ops", "errors", "ops/s", "p50 ms", "p99 ms", "p99 ÷ off", "client CPU ms/op", "stack CPU ms/op"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "".join("---:|" if h in right else "---|" for h in headers)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def machine_line(run: Run) -> str:
    meta = run.meta
    m = meta.get("machine", {})
    git = meta["git"]
    changed = f" + uncommitted changes to {', '.join(git['changed_files'])}" if git.get("changed_files") else ""
    a = meta["affinity"]
    return (
        f"{meta['created']}, commit `{git['commit'][:10]}`{changed}; {m.get('cpus', '?')} cores "
        f"({m.get('cpu_model', '?')}), {m.get('memory_gib', '?')} GiB, shared; Python {m.get('python', '?')}, "
        f"PostgreSQL {m.get('postgresql', '?')}; servers on cpu {a['servers']['off']}, client on cpu {a['client']}, "
        f"stack unpinned; load average {meta['loadavg']['before']} → {meta['loadavg']['after']}, "
        f"{meta.get('machine_cores_busy', float('nan')):.2f} of {m.get('cpus', '?')} cores busy on average while "
        f"measuring; {len(rounds(run))} rounds, measuring took {meta['seconds']['measured'] / 60:.1f} min, the "
        f"whole run {meta['seconds'].get('run', 0) / 60:.1f} min"
    )


def _log_line(run: Run) -> str:
    findings = run.meta.get("log_findings", {})
    return "; ".join(
        f"{c}: {f['500']} HTTP 500, {f['tracebacks']} tracebacks, {f['worker_timeouts']} worker timeouts, "
        f"{f['shed']} shed"
        for c, f in findings.items()
    )


def text_report(run: Run) -> str:
    parts = [machine_line(run), "", _text(*main_table(run)), "", _text(*target_table(run))]
    trips = redis_table(run)
    if trips:
        parts += ["", "Redis round trips per operation, by purpose:", _text(*trips)]
    fixed = idle_table(run)
    if fixed:
        parts += ["", "No traffic: the workers' CPU per second, and that fixed cost per operation:", _text(*fixed)]
    kernel = run.meta.get("syscalls")
    if kernel and "servers" in kernel:
        parts += ["", "perf: system calls and context switches per operation:", _text(*syscalls.table(kernel, TITLES))]
    counted = instruction_table(run)
    if counted:
        parts += ["", "callgrind: instructions per operation (one worker, the background apart):", _text(*counted)]
    table = profile_table(run)
    if table:
        parts += [
            "",
            "py-spy: each part's share of the workers' samples (≈ that share of app CPU ms/op):",
            _text(*table),
        ]
    parts += ["", "logs: " + _log_line(run)]
    return "\n".join(parts)


def _verdict_lines(run: Run) -> list[str]:
    lines = []
    for t in targets(run):
        if t.config != "on":
            continue
        what = "app CPU per request" if t.path in READ_PATHS else "p99"
        lines.append(
            f"- **{t.path}**: {what} {t.value:.3f}{X} off ({(t.value - 1) * 100:+.1f} %; rounds {t.spread}): "
            f"target {'met' if t.met else 'NOT met'} (≤ {t.limit:.2f}{X})."
        )
    return lines


def _profile_lines(run: Run) -> list[str]:
    profiles = run.meta.get("profiles") or {}
    if not profiles:
        return ["No target was missed: nothing was profiled."]
    if "error" in profiles:
        return [f"The missed targets were not profiled: {profiles['error']}."]
    lines = [
        f"py-spy, {profiles['rate']} samples/s per busy worker thread, {profiles['seconds']:g} s per server while "
        "the client sent that path (so a profile's operations are not the table's); *samples/op* counts a busy "
        f"worker thread's stacks per operation (1 sample = {1000 / profiles['rate']:g} ms; a thread waiting for the "
        "GIL or for the core counts as busy, so this is not CPU time): each part is given as its share of the "
        "samples and, in brackets, that share of the run's app CPU per operation. Each sample goes to one part: "
        "from the innermost frame outwards, the standard library and the clients a part calls (the cache and "
        "Redis, the operator's switches) are passed over and the first other frame decides (a "
        "middleware's own frames count for it, not "
        "the request it wraps; the queries themselves count for psycopg on every server):",
        "",
        _md(*profile_table(run)),  # type: ignore[misc]
        "",
    ]
    for key, p in profiles.items():
        if ":" not in key or key.endswith(":off") or not p.get("layer_top"):
            continue
        ops = max(1, p["operations"])
        top = ", ".join(f"`{name}` {count / ops:.2f}" for name, count in p["layer_top"][:5])
        path, config = key.split(":", 1)
        lines.append(f"- {path} on *{TITLES[config]}*, the layer's deciding frames, samples/op: {top}.")
    return lines


def _redis_lines(run: Run) -> list[str]:
    table = redis_table(run)
    if table is None:
        return []
    return [
        "### Redis round trips per operation",
        "",
        "Every round trip the layer makes to Redis (`bulwark_redis_round_trips_total{purpose}` from each server's "
        "`/metrics`, summed over its workers, read before and after each block; a command, a pipeline or a script "
        "is one), per operation, medians of the rounds, by purpose: `rate_limits` the limiter's one script per "
        "request (none while a worker's lease of the global `api` limit lasts), `read_your_writes` the user's "
        "last-write position (read once the user is known, written after a write), `node_trips` the nodes other "
        "workers found dead (read once a second), `worker_snapshots` the dashboard's per-worker snapshot (written "
        "once a second), `replay_guards` used refresh tokens, `breaker_state` the breakers shared by the workers. "
        "Background threads included:",
        "",
        _md(*table, numbers_from=2),
        "",
    ]


def section(run: Run) -> str:
    meta = run.meta
    b = meta["blocks"][0] if meta["blocks"] else {}
    args = meta["args"]
    parts = [
        "## Hot paths: the resilience layer on vs off (`bench/hotpaths`)",
        "",
        "### How to run it",
        "",
        "```sh",
        ".venv/bin/python -m bench.hotpaths             # ~26 min: 40 interleaved rounds, perf, callgrind, the tables",
        ".venv/bin/python -m bench.hotpaths --publish   # also writes docs/bench/hotpaths.png and this section",
        ".venv/bin/python -m bench.hotpaths --report bench/results/<run>   # re-render from the raw data",
        ".venv/bin/python -m bench.hotpaths --rounds 1 --requests 200 --paths detail --instructions 0   # a quick look",
        "make bench BENCH=hotpaths                      # the same with --publish",
        ".venv/bin/python -m bench.hotpaths.limiter     # ~3 min: the rate limiter alone, in-process (below)",
        "```",
        "",
        "It needs PostgreSQL 15 and Redis (as `make test` does), matplotlib for the plot, py-spy for the profile "
        "of a missed target (`pip install py-spy`; without it the report says nothing was profiled), and valgrind "
        "with its headers and gcc for the instruction counts (Debian's `valgrind` and `gcc`; without them that part "
        "is skipped and the report says why). It runs its "
        "own stack (`bench-hotpaths`, ports 61500-61502; after a hard kill "
        "`python -m devstack --name bench-hotpaths down`) "
        "and three gunicorn servers on free loopback ports, and stops them all on success, error, Ctrl-C or SIGTERM. "
        "Each run leaves `requests.jsonl` (every operation), `meta.json` (every block with its CPU readings, the "
        "settings, the pinning, machine, commit), the servers' logs, the py-spy profiles, `report.txt`, `report.md` "
        "and the plot in `bench/results/hotpaths-<time>/`.",
        "",
        "### What it does",
        "",
        "- **Three servers, one stack** (migrated, demo catalog, stock no run can exhaust), each gunicorn 2 workers "
        f"{X} "
        "4 threads, the same environment but for: **off** — `DJANGO_SETTINGS_MODULE=settings.baseline`, "
        "`gunicorn settings.baseline_wsgi`: no routing middleware, no router, only the primary, no node monitor, "
        "the stock PostgreSQL engine (django-prometheus's, so database metrics stay on), no throttle, no "
        "bulkheads or budgets (`settings/baseline.py` says what and why); **on, rate limits off** — "
        "`settings.base` with `RATELIMIT_ENABLED=false`; **on** — everything, every rate-limit scope counting in "
        "Redis at 1,000,000/m (counted, never refused: the global `api` scope from each worker's leases of 100, "
        "the log-in's and checkout's scopes exactly, one script per request). Logging (one JSON record per "
        "request), request ids and metrics are on in all three; tracing is started in none (no "
        "`OTEL_EXPORTER_OTLP_ENDPOINTS`). The serving "
        "limits are out of the way (each class 3 of 4 threads, 60 s budgets; nothing was shed: see the logs line). "
        "No `PAYMENT_GATEWAY_URL`: checkout calls no gateway, orders stay `pending_payment`, on every server.",
        "- **The hot paths:** the product list (`?page_size=20`), a product (the 60 in turn), a log-in (`POST "
        "/api/auth/token/`: Django's PBKDF2, ~0.3 s of CPU, is nearly all of it, so the layer cannot show there), "
        "a cart read with a Bearer token (30 readers with 3 items each), and a checkout: `POST /api/cart/items/` "
        f"then `POST /api/orders/` with a fresh `Idempotency-Key` ({args.get('shoppers_per_connection', 20)} "
        "shoppers per connection, none shared between connections), timed together.",
        f"- **The client:** {b.get('concurrency', args.get('concurrency'))} keep-alive connections, one thread each "
        "on `http.client`, closed loop (each waits for its answer, body read, before the next). Not locust: on 2 cores "
        "the client's own CPU lands next to the server's; a bare `http.client` thread costs a fraction of a "
        "millisecond per request (the *client CPU* column), locust adds gevent, event hooks and statistics on top "
        "(not measured). "
        "At most 3 connections: with 4 threads a worker's classes share 3, and more could be shed.",
        "- **Cores:** the servers pinned to one core (`taskset -c 0`), the client (this process) to the other "
        "(`sched_setaffinity`, cpu 1); the stack's PostgreSQL and Redis are not pinned (they share both with "
        "whatever else runs on the machine).",
        f"- **Rounds:** {len(rounds(run))} rounds; in each, path by path, the three servers one after the other "
        "(the order rotates per round), each a block of "
        f"{args.get('requests')} operations ({args.get('checkouts')} checkouts, {args.get('logins')} log-ins) after "
        f"{args.get('warmup')} unmeasured ones per connection.",
        "- **CPU:** around each block the gunicorn workers' CPU, exactly (every thread's "
        "`/proc/<pid>/task/*/schedstat`, in ns, where utime + stime count 10 ms ticks; the master apart), the "
        "stack's PostgreSQL and Redis process families and the client's: *app CPU ms/op* is the workers' CPU over the "
        "block ÷ its operations (the layer's background threads — node monitor probes, snapshot publisher — "
        "included: they are part of its cost). On this shared machine it is far steadier than requests per second. "
        "Medians of the rounds; ratios to *off* are taken round by round (a path's three blocks run back to back, "
        "in about 2-4 s: the machine's own slow swings, which move a server's CPU per request by up to 2x between "
        "rounds, hit the three alike), their median given with the range.",
        "- **Latency** p50 / p99 (nearest rank) over every operation of the rounds pooled, at the client.",
        "- **Instructions:** then each server again, alone, under callgrind (one worker, one connection): the "
        "instructions per request, which no other load on the machine can move "
        "([below](#instructions-per-request-callgrind-the-reading-the-machine-cannot-move)).",
        "",
        "### Results",
        "",
        f"Measured {machine_line(run)}.",
        "",
        f"Command: `{meta.get('command', 'python -m bench.hotpaths')}`.",
        "",
        _md(*main_table(run)),
        "",
        "*app CPU ms/op*: median of the rounds (their range in brackets); *÷ off*: median of the per-round ratios "
        "(range); *ops/s*: operations per second of a block (a checkout is 2 requests); p50/p99 over the rounds "
        "pooled. Logs: " + _log_line(run) + ".",
        "",
        "**Targets** (reported, not asserted): at most 5 % overhead on the read paths, judged on app CPU per request "
        "(the server is CPU-bound here: its capacity is the inverse; the measured ops/s ratio is in the table above "
        "and moves far more between rounds), and at most 10 % on checkout's p99:",
        "",
        _md(*target_table(run)),
        "",
        *_verdict_lines(run),
        "",
        "![App CPU per operation and p99, per hot path and server](bench/hotpaths.png)",
        "",
        "Bars: app CPU ms per operation (left) and p99 ms (middle) per hot path and server (log scale), the "
        "figure over a bar its ratio to *off*; where the instructions were counted, on the right their ratio to "
        "*off* per request (callgrind, the requests alone), the dashed line the read paths' 1.05.",
        "",
        *_redis_lines(run),
        *_idle_lines(run),
        *_syscall_lines(run),
        *_instruction_lines(run),
        "### Where the layer's time goes",
        "",
        *_profile_lines(run),
    ]
    if run.notes:
        parts += ["", run.notes]
    parts += [
        "",
        "### What the numbers do not show",
        "",
        "- Saturation: the client is a closed loop of 3 connections, not an open-loop load past the server's capacity.",
        "- Tracing's cost: no OTLP endpoint was set on any server (the span processors would add to all three alike).",
        "- A real network: every hop is loopback; across a network each Redis round trip in the table above is a "
        "network one, and so is a routed read's connection to a replica.",
        "- The layer's worth: what it costs here buys what `bench/failover`, `bench/serving` and `bench/ha` measure.",
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------
# The plot
# ----------------------------------------------------------------------------------------------------------


def plot(run: Run, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"off": "#bdbdbd", "on-nolimits": "#6baed6", "on": "#08519c"}
    counted = run.meta.get("instructions") or {}
    panels = 3 if "servers" in counted else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8))
    names = paths(run)
    width = 0.27
    for ax, key, label in (
        (axes[0], "cpu", "app CPU ms per operation (median of the rounds)"),
        (axes[1], "p99", "p99 ms (rounds pooled)"),
    ):
        for i, config in enumerate(CONFIGS):
            values = []
            for name in names:
                s = stat(run, config, name)
                values.append(s.cpu_ms if key == "cpu" else s.p99)
            xs = [j + (i - 1) * width for j in range(len(names))]
            ax.bar(xs, values, width=width, color=colors[config], label=TITLES[config])
            if config != "off":
                for x, name, v in zip(xs, names, values, strict=True):
                    off = stat(run, "off", name)
                    base = off.cpu_ms if key == "cpu" else off.p99
                    ratio = _median(round_ratios(run, config, name, "cpu")) if key == "cpu" else v / base
                    ax.annotate(f"{ratio:.2f}", (x, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3, which="both")
    if panels == 3:
        _plot_instructions(axes[2], counted, colors)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Hot paths: the resilience layer off, on without rate limits, on (÷ off over the bars)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_instructions(ax: Any, counted: dict[str, Any], colors: dict[str, str]) -> None:
    """Instructions per request ÷ off (callgrind, requests alone), the layer's two servers per path."""
    names = list(counted["paths"])
    width = 0.36
    for i, config in enumerate(LAYER):
        found = instructions.ratios(counted, config)
        values = [found.get(name, float("nan")) for name in names]
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, values, width=width, color=colors[config], label=TITLES[config])
        for x, v in zip(xs, values, strict=True):
            ax.annotate(f"{v:.3f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.axhline(CPU_TARGET, color="#c0392b", linewidth=1, linestyle="--", label="read target (1.05)")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0.95, max(1.15, *(r for c in LAYER for r in instructions.ratios(counted, c).values())) + 0.01)
    ax.set_ylabel("instructions per request ÷ off (callgrind, requests alone)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
