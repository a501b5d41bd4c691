"""Statistics, tables, the plot and the ``docs/benchmarks.md`` section of a serving benchmark run.

Per server (``bulkheaded``, ``undivided``), phase (``unloaded``, ``flood``) and measured request (``login``,
``checkout``): latency quantiles (nearest rank) over every request the client sent in the measured window,
errors and client timeouts included at the time they took (a client waits for a 503 too; a timeout counts as
the timeout), pooled over the rounds and per round; the flood ÷ unloaded ratio of the p99 per round and its
median over the rounds; the probes' failures; the flood's outcomes; the CPU each part used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import median as _median
from bench.stats import quantile
from bench.stats import read_jsonl as _jsonl

VARIANTS = ("bulkheaded", "undivided")
PHASES = ("unloaded", "flood")
KINDS = ("login", "checkout")
GOAL = 1.2
X = "\u00d7"  # the multiplication sign, for the docs
TITLES = {"bulkheaded": "bulkheaded (SERVING_BULKHEADS on)", "undivided": "undivided (one pool: bulkheads off)"}
MARKER = "bench-serving"


@dataclass
class Run:
    path: Path
    records: list[dict[str, Any]]
    flood: list[dict[str, Any]]
    meta: dict[str, Any]


def load(path: Path) -> Run:
    return Run(
        path,
        _jsonl(path / "requests.jsonl"),
        _jsonl(path / "flood.jsonl"),
        json.loads((path / "meta.json").read_text()),
    )


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "500": len(re.findall(r'"status": 500|HTTP/[\d.]+" 500 ', text)),
        "tracebacks": text.count("Traceback"),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
        "db_node_down": text.count("db_node_down"),
    }


def _rounds(run: Run) -> list[int]:
    return sorted({p["round"] for p in run.meta["phases"]})


def _phase(run: Run, round_no: int, variant: str, phase: str) -> dict[str, Any]:
    return next(p for p in run.meta["phases"] if (p["round"], p["variant"], p["phase"]) == (round_no, variant, phase))


def _samples(run: Run, variant: str, phase: str, kind: str, round_no: int | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in run.records
        if r["variant"] == variant
        and r["phase"] == phase
        and r["kind"] == kind
        and (round_no is None or r["round"] == round_no)
    ]


def _ok(kind: str, r: dict[str, Any]) -> bool:
    return r["status"] == (201 if kind in ("checkout", "cart_add") else 200)


@dataclass(frozen=True)
class Stat:
    n: int
    failed: int  # not the expected status (timeouts included)
    timeouts: int
    p50: float  # ms, pooled over the rounds
    p99: float
    worst: float
    round_p50: float  # median over the rounds of each round's quantile
    round_p99: float
    round_n_min: int


def stat(run: Run, variant: str, phase: str, kind: str) -> Stat:
    mine = _samples(run, variant, phase, kind)
    ms = [r["latency"] * 1000 for r in mine]
    per_round = [[r["latency"] * 1000 for r in _samples(run, variant, phase, kind, n)] for n in _rounds(run)]
    return Stat(
        n=len(mine),
        failed=sum(1 for r in mine if not _ok(kind, r)),
        timeouts=sum(1 for r in mine if r.get("error") == "timeout"),
        p50=quantile(ms, 0.5),
        p99=quantile(ms, 0.99),
        worst=max(ms) if ms else float("nan"),
        round_p50=_median([quantile(v, 0.5) for v in per_round if v]),
        round_p99=_median([quantile(v, 0.99) for v in per_round if v]),
        round_n_min=min((len(v) for v in per_round), default=0),
    )


def ratios(run: Run, variant: str, kind: str) -> list[float]:
    """flood p99 ÷ unloaded p99, round by round (the two phases of a round ran minutes apart on one server)."""
    found = []
    for n in _rounds(run):
        unloaded = [r["latency"] for r in _samples(run, variant, "unloaded", kind, n)]
        flood = [r["latency"] for r in _samples(run, variant, "flood", kind, n)]
        if unloaded and flood:
            found.append(quantile(flood, 0.99) / quantile(unloaded, 0.99))
    return found


def probes(run: Run, variant: str, phase: str, window: str = "all") -> dict[str, dict[str, int]]:
    """Per probe (ready, live): attempts and failures (not 200, timeouts included), over the phase's window:
    ``all`` (the whole phase), ``flood`` (flood start to its last arrival) or ``drain`` (after that: the flood's
    last requests end, the lock is released, the server drains)."""
    found: dict[str, dict[str, int]] = {}
    for kind in ("ready", "live"):
        total = failed = timeouts = 0
        for n in _rounds(run):
            info = _phase(run, n, variant, phase)
            lo, hi = info["probes_from"], info["probes_to"]
            if window == "flood":
                lo, hi = info.get("flood_from", lo), info.get("flood_to", hi)
            elif window == "drain":
                lo = info.get("flood_to", hi)
            for r in _samples(run, variant, phase, kind, n):
                if lo <= r["start"] <= hi:
                    total += 1
                    failed += r["status"] != 200
                    timeouts += r.get("error") == "timeout"
        found[kind] = {"attempts": total, "failed": failed, "timeouts": timeouts}
    return found


def flood_outcomes(run: Run, variant: str) -> dict[str, Any]:
    mine = [r for r in run.flood if r["variant"] == variant]
    counts = {"200": 0, "503 overloaded": 0, "504 request_timeout": 0, "other": 0, "client timeout": 0, "conn error": 0}
    other: dict[str, int] = {}
    for r in mine:
        if r["status"] == 200:
            counts["200"] += 1
        elif r["status"] == 503 and r["code"] == "overloaded":
            counts["503 overloaded"] += 1
        elif r["status"] == 504 and r["code"] == "request_timeout":
            counts["504 request_timeout"] += 1
        elif r["error"] == "timeout":
            counts["client timeout"] += 1
        elif r["status"] == 0:
            counts["conn error"] += 1
        else:
            counts["other"] += 1
            key = f"{r['status']} {r['code']}".strip()
            other[key] = other.get(key, 0) + 1
    shed = [r["latency"] * 1000 for r in mine if r["code"] == "overloaded"]
    cut = [r["latency"] * 1000 for r in mine if r["code"] == "request_timeout"]
    infos = [_phase(run, n, variant, "flood") for n in _rounds(run)]
    seconds = sum(i["flood_to"] - i["flood_from"] for i in infos)
    return {
        "sent": len(mine),
        "unfinished": sum(i["flood"]["unfinished"] for i in infos),
        "rate": len(mine) / seconds if seconds else float("nan"),
        "counts": counts,
        "other": other,
        "overloaded_p50_ms": quantile(shed, 0.5),
        "timeout_p50_ms": quantile(cut, 0.5),
        "delay_p99_ms": quantile([r["delay"] * 1000 for r in mine], 0.99),
        "delay_max_ms": max((r["delay"] * 1000 for r in mine), default=float("nan")),
        "peak_in_flight": max((i["flood"]["peak_in_flight"] for i in infos), default=0),
    }


def cpu(run: Run, variant: str, phase: str) -> dict[str, float]:
    infos = [_phase(run, n, variant, phase)["cpu"] for n in _rounds(run)]

    def rest(i: dict[str, Any]) -> float:
        return i["machine"] - sum(i["servers"].values()) - i["load_generator"] - i.get("stack", 0.0)

    return {
        "load_generator": _median([i["load_generator"] for i in infos]),
        "server": _median([i["servers"][variant] for i in infos]),
        "other_server": _median([i["servers"][v] for i in infos for v in i["servers"] if v != variant]),
        "stack": _median([i.get("stack", float("nan")) for i in infos]),
        "rest": _median([rest(i) for i in infos]),
        "machine": _median([i["machine"] for i in infos]),
    }


QUIET = 0.2  # cores: outside load below this in both phases of a round makes the round "quiet"


def outside_load(run: Run, round_no: int, variant: str, phase: str) -> float:
    """Cores the machine used for other things than this benchmark (servers, load generator, stack)."""
    i = _phase(run, round_no, variant, phase)["cpu"]
    return i["machine"] - sum(i["servers"].values()) - i["load_generator"] - i.get("stack", 0.0)


def quiet_rounds(run: Run, variant: str) -> list[int]:
    return [n for n in _rounds(run) if all(outside_load(run, n, variant, p) < QUIET for p in PHASES)]


def waiting_counts(run: Run, variant: str) -> dict[str, list[int]]:
    """Per node, how many statements waited for the lock after each flood phase's warm-up (one per round)."""
    found: dict[str, list[int]] = {"primary": [], "replica": []}
    for n in _rounds(run):
        waiting = _phase(run, n, variant, "flood").get("waiting_for_lock", {})
        for node in found:
            found[node].append(sum(waiting.get(node, {}).values()))
    return found


def fill_stat(run: Run, variant: str) -> Stat | None:
    """The cart adds that filled the carts before each unloaded phase (``--checkout`` order mode)."""
    if not _samples(run, variant, "unloaded-fill", "cart_add"):
        return None
    return stat(run, variant, "unloaded-fill", "cart_add")


# ----------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------


def _f(value: float) -> str:
    if value != value:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _r(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{_median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _checkout_name(run: Run) -> str:
    return "checkout (cart add + order)" if run.meta["checkout_flow"] == "cart+order" else "checkout (order)"


def latency_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = [
        "request",
        "server",
        "unloaded n",
        "unloaded p50 ms",
        "unloaded p99 ms",
        "flood n",
        "flood p50 ms",
        "flood p99 ms",
        "flood failed",
        "p99 flood ÷ unloaded, per round: median (range)",
        "pooled p99 ratio",
    ]
    body = []
    for kind in KINDS:
        timeout = run.meta["timeouts"][kind] * 1000
        for variant in VARIANTS:
            u, f = stat(run, variant, "unloaded", kind), stat(run, variant, "flood", kind)
            rr = ratios(run, variant, kind)
            at_least = "≥ " if f.timeouts and f.p99 >= timeout else ""  # censored: the client gave up
            body.append(
                [
                    "login" if kind == "login" else _checkout_name(run),
                    variant,
                    str(u.n),
                    _f(u.p50),
                    _f(u.p99),
                    str(f.n),
                    ("≥ " if f.timeouts and f.p50 >= timeout else "") + _f(f.p50),
                    at_least + _f(f.p99),
                    f"{f.failed}" + (f" ({f.timeouts} timed out)" if f.timeouts else ""),
                    at_least + _r(rr),
                    at_least + _f(f.p99 / u.p99) if u.n and f.n else "-",
                ]
            )
    return headers, body


def round_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = ["request", "server", "phase"] + [f"round {n + 1} p50 / p99 ms (n)" for n in _rounds(run)]
    body = []
    for kind in KINDS:
        for variant in VARIANTS:
            for phase in PHASES:
                cells = []
                for n in _rounds(run):
                    ms = [r["latency"] * 1000 for r in _samples(run, variant, phase, kind, n)]
                    cells.append(f"{_f(quantile(ms, 0.5))} / {_f(quantile(ms, 0.99))} ({len(ms)})")
                body.append(["login" if kind == "login" else _checkout_name(run), variant, phase, *cells])
    return headers, body


def probe_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = [
        "server",
        "phase",
        "/health/ready failed / sent",
        "/health/live failed / sent",
        "of which timeouts (1 s)",
        "after the flood, until drained: ready / live failed",
    ]
    body = []
    for variant in VARIANTS:
        for phase in PHASES:
            during = probes(run, variant, phase, "flood" if phase == "flood" else "all")
            drained = probes(run, variant, phase, "drain") if phase == "flood" else None
            body.append(
                [
                    variant,
                    phase if phase == "unloaded" else "flood (warm-up + measured)",
                    f"{during['ready']['failed']} / {during['ready']['attempts']}",
                    f"{during['live']['failed']} / {during['live']['attempts']}",
                    str(during["ready"]["timeouts"] + during["live"]["timeouts"]),
                    "-"
                    if drained is None
                    else f"{drained['ready']['failed']} / {drained['ready']['attempts']}, "
                    f"{drained['live']['failed']} / {drained['live']['attempts']}",
                ]
            )
    return headers, body


def flood_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = [
        "server",
        "flood requests (req/s)",
        "200",
        "503 overloaded",
        "504 request_timeout",
        "client timeout (10 s)",
        "other",
        "503 p50 ms",
        "504 p50 ms",
        "generator delay p99 / max ms",
    ]
    body = []
    for variant in VARIANTS:
        o = flood_outcomes(run, variant)
        c = o["counts"]
        other = c["other"] + c["conn error"]
        detail = ", ".join(f"{k} x{v}" for k, v in o["other"].items())
        body.append(
            [
                variant,
                f"{o['sent']} ({o['rate']:.1f})",
                str(c["200"]),
                str(c["503 overloaded"]),
                str(c["504 request_timeout"]),
                str(c["client timeout"]),
                f"{other}"
                + (f" ({detail})" if detail else "")
                + (f", {c['conn error']} conn" if c["conn error"] else ""),
                _f(o["overloaded_p50_ms"]),
                _f(o["timeout_p50_ms"]),
                f"{_f(o['delay_p99_ms'])} / {_f(o['delay_max_ms'])}",
            ]
        )
    return headers, body


def cpu_table(run: Run) -> tuple[list[str], list[list[str]]]:
    headers = [
        "server",
        "phase",
        "load generator",
        "server measured",
        "other server (idle)",
        "stack (PostgreSQL, Redis)",
        "everything else on the machine",
        "whole machine",
    ]
    body = []
    for variant in VARIANTS:
        for phase in PHASES:
            c = cpu(run, variant, phase)
            body.append(
                [
                    variant,
                    phase,
                    f"{c['load_generator']:.3f}",
                    f"{c['server']:.2f}",
                    f"{c['other_server']:.2f}",
                    f"{c['stack']:.2f}",
                    f"{c['rest']:.2f}",
                    f"{c['machine']:.2f} of {run.meta['machine']['cpus']}",
                ]
            )
    return headers, body


def isolation_table(run: Run) -> tuple[list[str], list[list[str]]]:
    iso = run.meta["isolation"]
    headers = ["request (sent while the lock was held)", "status", "ms", "waited for the lock"]
    body = [
        [name, f"{r['status']} {r['code']}".strip(), f"{r['latency'] * 1000:.0f}", "**yes**" if r["waited"] else "no"]
        for name, r in iso["requests"].items()
    ]
    return headers, body


def _text(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def _md(headers: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def machine_line(run: Run) -> str:
    meta = run.meta
    m = meta["machine"]
    git = meta["git"]
    changed = f" + uncommitted changes to {', '.join(git['changed_files'])}" if git.get("changed_files") else ""
    return (
        f"{meta['created']}, commit `{git['commit'][:7]}`{changed}; {m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, shared; load average {meta['loadavg']['before']} → {meta['loadavg']['after']}; "
        f"Python {m['python']}, PostgreSQL {m['postgresql']}; {len(_rounds(run))} rounds, "
        f"{meta['args']['phase_seconds']:g} s measured per phase; measuring took "
        f"{meta['seconds']['measured'] / 60:.0f} min, the whole run {meta['seconds']['run'] / 60:.0f} min"
    )


def text_report(run: Run) -> str:
    parts = [
        machine_line(run),
        "",
        "isolation check:",
        _text(*isolation_table(run)),
        "",
        _text(*latency_table(run)),
        "",
        _text(*round_table(run)),
        "",
        _text(*probe_table(run)),
        "",
        _text(*flood_table(run)),
        "",
        _text(*cpu_table(run)),
    ]
    fills = {v: fill_stat(run, v) for v in VARIANTS}
    for variant, s in fills.items():
        if s is not None:
            parts.append(
                f"cart add before the unloaded phases, {variant}: n {s.n}, p50 {_f(s.p50)} ms, p99 {_f(s.p99)} ms"
            )
    for variant in VARIANTS:
        failed = [
            r for r in run.records if r["variant"] == variant and r["kind"] in ("ready", "live") and r["status"] != 200
        ]
        if variant == "bulkheaded" or len(failed) <= 5:
            for r in failed:
                parts.append(
                    f"probe failed, {variant} round {r['round'] + 1} {r['phase']}: {r['kind']} at {r['start']:.1f} s, "
                    f"{r['status'] or r['error']} {r.get('code', '')} after {r['latency'] * 1000:.0f} ms"
                )
    parts.append(f"logs: {run.meta['log_findings']}")
    parts.append(f"server counters: {run.meta['serving_counters']}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------
# The docs section
# ----------------------------------------------------------------------------------------------------------


def _nth(k: int) -> str:
    return {1: "slowest", 2: "second-slowest", 3: "third-slowest"}.get(k, f"{k}th-slowest")


def _censored(run: Run, variant: str, kind: str) -> str:
    """``≥ `` when the flood phase's p99 is the client's timeout: the real figure is larger."""
    f = stat(run, variant, "flood", kind)
    return "≥ " if f.timeouts and f.p99 >= run.meta["timeouts"][kind] * 1000 else ""


def _verdict(run: Run) -> list[str]:
    lines = []
    for kind in KINDS:
        name = "login" if kind == "login" else _checkout_name(run)
        per_round = ratios(run, "bulkheaded", kind)
        b, u = _median(per_round), _median(ratios(run, "undivided", kind))
        uf = stat(run, "undivided", "flood", kind)
        timeout = run.meta["timeouts"][kind]
        fewest = min(stat(run, "bulkheaded", p, kind).round_n_min for p in PHASES)
        note = (
            f" With {fewest} of them in the bulkheaded server's thinnest phase, that phase's p99 is its "
            f"{_nth(fewest - int(0.99 * fewest))} request: fewer than the 200 a p99 wants."
            if fewest < 200
            else ""
        )
        lines.append(
            f"- **{name}: under the flood the bulkheaded server's p99 is {b:.2f}{X} its unloaded p99** (median of "
            f"the rounds; {min(per_round):.2f}-{max(per_round):.2f} over the rounds): the goal of ≤ {GOAL} is "
            f"{'met' if b <= GOAL else '**not met**'}. **The undivided pool's is {_censored(run, 'undivided', kind)}"
            f"{u:.2f}{X}**, {uf.timeouts} of its {uf.n} {kind} requests under the flood given up by the client "
            f"after {timeout:g} s (median {'≥ ' if uf.p50 >= timeout * 1000 else ''}{_f(uf.p50)} ms against "
            f"{_f(stat(run, 'undivided', 'unloaded', kind).p50)} ms unloaded).{note}"
        )
    return lines


def _quiet_lines(run: Run) -> list[str]:
    """The rounds in which nothing else loaded the machine, and what limits the ratio when the goal is missed."""
    quiet = quiet_rounds(run, "bulkheaded")
    lines = []
    if quiet:
        parts = []
        for kind in KINDS:
            vals = [_round_ratio(run, "bulkheaded", kind, n) for n in quiet]
            parts.append(f"{'login' if kind == 'login' else 'checkout'} " + ", ".join(f"{v:.2f}{X}" for v in vals))
        lines.append(
            f"- **Rounds with the machine otherwise quiet** (outside load under {QUIET} cores in both bulkheaded "
            f"phases): round {', '.join(str(n + 1) for n in quiet)}, bulkheaded p99 ratio {'; '.join(parts)}. "
            "The other rounds shared the cores with other jobs in one phase more than in the other, which moves "
            "their ratios either way."
        )
    missed = [k for k in KINDS if _median(ratios(run, "bulkheaded", k)) > GOAL]
    if missed:
        lines.append(
            "- **What limits the bulkheaded ratio:** the bulkheads keep threads free, not CPU: each of the "
            f"{run.meta['flood']['rate']:g} flood requests a second still costs its worker Python time (parse, "
            "classify, render the 503; for the admitted ones the whole Django stack, the cancel and two ERROR log "
            "records), in the same processes and under the same GIL as the checkouts and logins, on 2 cores that "
            "also run the logins' PBKDF2. The p50s barely move; the tail does, in a checkout's many short "
            "database round trips more than in a login's one long hash. Where the time goes inside the worker was "
            "not measured."
        )
    return lines


def _waiting_lines(run: Run) -> list[str]:
    iso = run.meta["isolation"]
    lines = []
    for node, queries in iso["waiting"].items():
        for q, count in queries.items():
            short = re.sub(r"\s+", " ", q)
            short = short if len(short) < 200 else short[:120] + " ... " + short[-75:]
            lines.append(f"  - on the {node} ({count}): `{short}`")
        if not queries:
            lines.append(f"  - on the {node}: none")
    return lines


def _replica_locks(lock: dict[str, Any]) -> str:
    rows = lock.get("replica_locks") or []
    return (
        "; ".join(f"`{mode}`, {'granted' if granted else 'waiting'}, held by the {who}" for mode, granted, who in rows)
        or "none"
    )


def section(run: Run) -> str:
    meta = run.meta
    serving = meta["serving"]
    flood = meta["flood"]
    limits = serving["limits"]
    budgets = serving["budgets"]
    iso = meta["isolation"]
    cart_waited = iso["requests"].get("checkout: POST /api/cart/items/ (cart add)", {}).get("waited")
    b_flood = flood_outcomes(run, "bulkheaded")
    u_flood = flood_outcomes(run, "undivided")
    b_cpu_f, u_cpu_f = cpu(run, "bulkheaded", "flood"), cpu(run, "undivided", "flood")
    b_cpu_u, u_cpu_u = cpu(run, "bulkheaded", "unloaded"), cpu(run, "undivided", "unloaded")
    b_probe = probes(run, "bulkheaded", "flood", "flood")
    u_probe = probes(run, "undivided", "flood", "flood")
    b_unl_probe = probes(run, "bulkheaded", "unloaded")
    u_unl_probe = probes(run, "undivided", "unloaded")
    fills = {v: fill_stat(run, v) for v in VARIANTS}
    probe_failures = sum(
        p[k]["failed"] for p in (b_probe, b_unl_probe, probes(run, "bulkheaded", "flood", "drain")) for k in p
    )
    rounds = len(_rounds(run))
    phase_s = meta["args"]["phase_seconds"]
    minutes = meta["seconds"]["run"] / 60
    admitted_conc = limits["catalog"] * serving["workers"]
    demand = flood["rate"] * budgets["catalog"]
    out: list[str] = [
        "## Serving bulkheads: checkout and login under a flood of stuck catalog reads (`bench/serving`)",
        "",
        "### How to run it",
        "",
        "```sh",
        f".venv/bin/python -m bench.serving             # ~{minutes:.0f} min ({rounds} rounds x 2 servers x 2 phases"
        f" of {phase_s:g} s); prints the tables",
        ".venv/bin/python -m bench.serving --publish   # also writes docs/bench/serving.png and this section",
        ".venv/bin/python -m bench.serving --report bench/results/<run>   # re-render from the raw data",
        ".venv/bin/python -m bench.serving --rounds 1 --phase-seconds 60  # a quick look (~6 min), too few logins"
        " for a p99",
        "```",
        "",
        "It starts its own stack (`bench-serving`, ports 61400-61402; after a hard kill "
        "`python -m devstack --name bench-serving down`) and two gunicorn servers on free loopback ports, and stops "
        "them all on success, error, Ctrl-C or SIGTERM. Each run leaves `requests.jsonl` (every login, checkout, "
        "cart add and probe), `flood.jsonl` (every flood request), `meta.json` (the isolation check, the lock "
        "evidence, phase times, CPU, server counters, machine, commit), both gunicorn logs, `report.txt`, "
        "`report.md` and the plot in `bench/results/serving-<time>/`.",
        "",
        "### What it does",
        "",
        "**The fault: a stuck catalog dependency, not a busy CPU.** Bulkheads protect threads from requests that "
        "*wait*; against a flood that burns CPU there is nothing to win on 2 shared cores, in either server. So the "
        "flood's reads must be slow because they wait on something checkout and login do not need. The wait chosen "
        "is an operator's migration that holds `LOCK TABLE shop_category IN ACCESS EXCLUSIVE MODE` in an open "
        "transaction on the primary: PostgreSQL WAL-logs the lock and the streaming replica's startup process takes "
        "it when it replays the record, so catalog reads (every product and category read selects or joins "
        "`shop_category`) wait on either node. The benchmark takes the lock, makes small commits until the replica "
        "has replayed it (an open transaction's lock record is not flushed by itself), and reads the replica's "
        f"`pg_locks` back ({_replica_locks(iso['lock'])} in the isolation check, replayed "
        f"{iso['lock']['seconds_to_replica']:.2f} s after the lock was taken). The database layer sees nothing "
        "wrong: the "
        "monitor's probes and the replica's lag do not touch the table. What ends a stuck read is the catalog "
        f"class's time budget (`SERVING_BUDGET_CATALOG={budgets['catalog']:g}s` here, default 5 s): PostgreSQL "
        "cancels the statement and the request answers `504 request_timeout`.",
        "",
        "**What the lock holds up** (checked at the start of every run, on the bulkheaded server: the lock held "
        f"{iso['hold_seconds']:.1f} s, one request of each kind sent at once, and PostgreSQL asked which statements "
        "wait for a lock on `shop_category`):",
        "",
        _md(*isolation_table(run)),
        "",
        "Statements PostgreSQL listed as waiting for the lock:",
        "",
        *_waiting_lines(run),
        "",
    ]
    if cart_waited:
        out += [
            "**The cart add waits too**, because the cart it answers with is read with "
            '`select_related("product", "product__category")` (`shop/cart/selectors.py`), a join with '
            "`shop_category` although the cart's serializer shows no category. No other table or lock separates it "
            "from the catalog's reads: every catalog read and the cart read take the same `AccessShareLock` on "
            "`shop_category`, and a wait on the replica alone would be a lagging replica, which the database layer "
            "routes around. So here **a checkout sample is the order alone** (`POST /api/orders/` with an "
            "`Idempotency-Key`): before each phase every shopper's cart is filled with one product (the lock is not "
            "held then), and the checkout client orders as the next shopper each time. Login and the order touch "
            "`auth_user`, the carts, products (locked `FOR UPDATE` by id, no join), orders and the idempotency "
            "records, and did not wait. Once the cart read stops joining the category, `--checkout auto` (the "
            "default) measures cart add + order. (The isolation check holds the lock for less than "
            "`DB_QUERY_TIMEOUT`: while building this benchmark a cart add that waited 5 s was cut by the node "
            "deadline, answered `503 read_only_mode`, and its worker logged `database node down: default` — the "
            "primary, marked down for a lock wait.)",
            "",
        ]
    out += [
        f"**Servers:** two gunicorns on one stack, {serving['workers']} workers {X} {serving['threads']} threads, "
        f"the default class limits (catalog {limits['catalog']}, auth {limits['auth']}, checkout "
        f"{limits['checkout']}, admin {limits['admin']}, ops {limits['ops']} per worker; the non-ops classes "
        f"together at most {serving['threads'] - 1}), budgets catalog {budgets['catalog']:g} s, auth "
        f"{budgets['auth']:g} s, checkout {budgets['checkout']:g} s, `RATELIMIT_ENABLED=false` (one client address), "
        f"no payment gateway (orders stay `pending_payment`), `DB_QUERY_TIMEOUT` {serving['db_query_deadline']:g} s. "
        "They differ in one setting: **bulkheaded** runs `settings.base` (`SERVING_BULKHEADS = True`); "
        "**undivided** runs `DJANGO_SETTINGS_MODULE=bench.serving.undivided_settings` (`SERVING_BULKHEADS = False`: "
        "requests are classified, budgeted and counted the same, never refused for concurrency — one pool of "
        "threads for everything, as a server without bulkheads). Both run all the time; they are measured in turn.",
        "",
        f"**The flood:** `GET /api/products/<id>/` (random product) arriving at **{flood['rate']:g} requests/s**, "
        f"Poisson, open loop: {flood['factor']:g}{X} what the catalog bulkheads admit (catalog limit {X} workers ÷ "
        f"budget = {limits['catalog']} {X} {serving['workers']} ÷ {budgets['catalog']:g} s = "
        f"{flood['admitted_per_second']:g}/s). Held for the budget, the flood wants ~{demand:.0f} threads at once: "
        f"more than the catalog's {admitted_conc} and more than the undivided pool's "
        f"{serving['workers'] * serving['threads']}. A dispatcher thread hands each arrival at its due time to one "
        f"of {meta['args']['flood_senders']} sender threads over a pool of keep-alive connections (urllib3, no "
        "retries), so a slow answer never delays the next arrival (the generator's delay is in the table), and "
        f"gives up after {flood['timeout']:g} s.",
        "",
        f"**Measured, per server and round:** an *unloaded* phase, then a *flood* phase (the lock taken and seen on "
        f"the replica, the flood started, {meta['args']['warmup']:g} s of warm-up so the threads fill, then "
        f"measured; afterwards the flood stops, the lock is released and the server drains). In each, for "
        f"{phase_s:g} s: the **login client** sends `POST /api/auth/token/` back to back on one keep-alive "
        "connection (a real PBKDF2 check of Django's default 1,000,000 iterations: about 0.6 s of one core each, "
        "which is what bounds the number of logins per phase); the **checkout client** "
        f"one checkout every {meta['args']['checkout_interval']:g} s; the **prober** `GET /health/ready` then "
        f"`GET /health/live` every {meta['args']['probe_interval']:g} s, each on a new connection with a 1 s "
        f"timeout, as a kubelet would. Client timeouts: login {meta['timeouts']['login']:g} s, checkout "
        f"{meta['timeouts']['checkout']:g} s. {rounds} rounds; the server measured first alternates. Latency is "
        "client-side, body read, over every request sent in the measured window, errors and timeouts included (a "
        "timeout at the timeout). The ratio is flood p99 ÷ unloaded p99 of the same server in the same round; the "
        "table gives the median over the rounds (range) and the ratio of the pooled p99s.",
        "",
        "### Results",
        "",
        f"Measured {machine_line(run)}.",
        "",
        _md(*latency_table(run)),
        "",
        "Per round:",
        "",
        _md(*round_table(run)),
        "",
        "Probes (failed = not 200, or no answer within 1 s; *after the flood*: from its last arrival until the server "
        "has drained, the lock released once the flood's last requests ended):",
        "",
        _md(*probe_table(run)),
        "",
        "The flood, all rounds (the generator's delay: from an arrival's due time to its send):",
        "",
        _md(*flood_table(run)),
        "",
        "Statements waiting for the lock at the end of each flood phase's warm-up (PostgreSQL's `pg_locks`, one "
        "count per round): "
        + "; ".join(
            f"{v} primary {waiting_counts(run, v)['primary']}, replica {waiting_counts(run, v)['replica']}"
            for v in VARIANTS
        )
        + f" (the catalog bulkheads admit {admitted_conc} at once; the undivided pool has "
        f"{serving['workers'] * serving['threads']} threads).",
        "",
        "CPU, cores used during the measured window (median of the rounds):",
        "",
        _md(*cpu_table(run)),
        "",
    ]
    fill_lines = [f"{v} p50 {_f(s.p50)} / p99 {_f(s.p99)} ms (n {s.n})" for v, s in fills.items() if s is not None]
    if fill_lines:
        out += ["Cart adds that filled the carts before the unloaded phases: " + "; ".join(fill_lines) + ".", ""]
    logs = meta["log_findings"]
    out += [
        f"Server logs: bulkheaded {logs['bulkheaded']}, undivided {logs['undivided']}. Server counters at the end "
        f"(`bulwark_serving_requests_total`, catalog): bulkheaded "
        f"{_counter_line(meta['serving_counters']['bulkheaded'])}; undivided "
        f"{_counter_line(meta['serving_counters']['undivided'])}.",
        "",
        "![Login and checkout p99 per server and phase; latency over time in one round's flood phases]"
        "(bench/serving.png)",
        "",
        "Left: p99 per server, request and phase (median of the rounds; log scale) with the median flood ÷ unloaded "
        "ratio. Right: every login and checkout of both flood phases of one round (the one whose bulkheaded login "
        "ratio is the median) over time (log scale; x: failed or timed out), failed probes marked at the bottom.",
        "",
        "### Reading the numbers",
        "",
        *_verdict(run),
        f"- **Probes:** bulkheaded {probe_failures} failed of "
        f"{sum(p[k]['attempts'] for p in (b_probe, b_unl_probe) for k in p)} during the unloaded and flood phases; "
        f"the undivided pool {sum(u_probe[k]['failed'] for k in u_probe)} of "
        f"{sum(u_probe[k]['attempts'] for k in u_probe)} under the flood "
        f"({sum(u_unl_probe[k]['failed'] for k in u_unl_probe)} unloaded). In the undivided pool a probe waits in "
        "the same queue as the stuck reads.",
        f"- **What the flood got:** bulkheaded {b_flood['counts']['503 overloaded']} `503 overloaded` at once "
        f"(p50 {_f(b_flood['overloaded_p50_ms'])} ms) and {b_flood['counts']['504 request_timeout']} admitted reads "
        f"cut at the budget ({_f(b_flood['timeout_p50_ms'])} ms); undivided "
        f"{u_flood['counts']['503 overloaded']} refused, {u_flood['counts']['504 request_timeout']} cut at the "
        f"budget and {u_flood['counts']['client timeout']} given up by the client after "
        f"{flood['timeout']:g} s in the queue. Nothing in the catalog could have succeeded while the lock was held; "
        "the bulkheads change how fast it fails and what else still works.",
        *_quiet_lines(run),
        f"- **The flood is waiting, not CPU:** under it the undivided server used {u_cpu_f['server']:.2f} cores "
        f"({u_cpu_u['server']:.2f} unloaded): every thread waited on the lock and it did next to nothing else. The "
        f"bulkheaded server used {b_cpu_f['server']:.2f} ({b_cpu_u['server']:.2f} unloaded), most of it the logins' "
        f"PBKDF2; the load generator {b_cpu_f['load_generator']:.3f} and {u_cpu_f['load_generator']:.3f} cores, "
        f"the stack {b_cpu_f['stack']:.2f} and {u_cpu_f['stack']:.2f} (medians of the rounds). Other jobs on the "
        f"shared machine added {b_cpu_f['rest']:.2f} cores (median) to the bulkheaded flood phases and "
        f"{b_cpu_u['rest']:.2f} to its unloaded ones; per round in `meta.json`.",
        "",
        "### What the numbers do not show",
        "",
        "- A flood that burns CPU (expensive searches, a bot crawling every page): bulkheads do not help there and "
        "none is measured. Nor a thread exhaustion from a slow *client* (a body trickled in, a response read slowly): "
        "a thread that reads a request is taken before the middleware classifies it (a response read slowly keeps "
        "its place in the bulkhead until gunicorn has written it out, so that one is bounded by the class limit).",
        "- More than one flooding class, the ops reserve under a flood of every class at once, or the admin class.",
        f"- Other sizes: only 2 workers {X} 8 threads with the default limits were run; the flood rate is one multiple "
        f"({flood['factor']:g}{X}) of the catalog's admission, and the budget was shortened to "
        f"{budgets['catalog']:g} s to keep the run short (with the default 5 s a stuck read holds its thread 2.5{X} "
        "longer and the undivided pool's queue grows faster).",
        "- A real outage's length: in the undivided pool the queue grows for as long as the flood lasts, so its "
        f"latency under the flood depends on the phase's {phase_s:g} s; what holds is that it is unbounded, "
        "not the figure.",
        "- Checkout as a customer sees it while the lock is held: "
        + (
            "the cart add waits for the lock in both servers (above), so a customer adding to the cart is stuck "
            "whatever the bulkheads do; the order alone was measured."
            if cart_waited
            else "measured as cart add + order."
        ),
        "- Latency on an idle machine: the machine is shared and the logins' PBKDF2 alone keeps most of a core "
        "busy; absolute milliseconds move between runs, the ratios of a round much less.",
        "",
    ]
    return "\n".join(out)


def _counter_line(counters: dict[str, float]) -> str:
    keys = [k for k in counters if k.startswith("catalog:")]
    return ", ".join(f"{k.split(':', 1)[1]} {counters[k]:.0f}" for k in sorted(keys)) or "-"


# ----------------------------------------------------------------------------------------------------------
# The plot
# ----------------------------------------------------------------------------------------------------------


def _round_ratio(run: Run, variant: str, kind: str, round_no: int) -> float:
    unloaded = [r["latency"] for r in _samples(run, variant, "unloaded", kind, round_no)]
    flood = [r["latency"] for r in _samples(run, variant, "flood", kind, round_no)]
    return quantile(flood, 0.99) / quantile(unloaded, 0.99) if unloaded and flood else float("nan")


def plot(run: Run, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.5]})
    colors = {"unloaded": "#9ecae1", "flood": "#de2d26"}
    labels, x = [], 0
    for kind in KINDS:
        for variant in VARIANTS:
            for i, phase in enumerate(PHASES):
                s = stat(run, variant, phase, kind)
                left.bar(x + i * 0.4, s.round_p99, width=0.4, color=colors[phase], label=phase if x == 0 else None)
            ratio = _median(ratios(run, variant, kind))
            top = max(stat(run, variant, p, kind).round_p99 for p in PHASES)
            left.annotate(f"{ratio:.2f}{X}", (x + 0.2, top), ha="center", va="bottom", fontsize=8)
            labels.append((x + 0.2, f"{'login' if kind == 'login' else 'checkout'}\n{variant}"))
            x += 1.2
    left.set_xticks([p for p, _ in labels], [t for _, t in labels], fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("p99 ms (median of the rounds)")
    left.legend(fontsize=8, loc="upper left")
    left.grid(axis="y", alpha=0.3, which="both")

    by_ratio = sorted(_rounds(run), key=lambda n: _round_ratio(run, "bulkheaded", "login", n))
    first = by_ratio[len(by_ratio) // 2]  # the round of the median bulkheaded login ratio
    styles = {
        ("bulkheaded", "login"): ("o", "#08519c"),
        ("bulkheaded", "checkout"): ("s", "#6baed6"),
        ("undivided", "login"): ("o", "#a63603"),
        ("undivided", "checkout"): ("s", "#fd8d3c"),
    }
    offset = 0.0
    ticks = []
    for variant in VARIANTS:
        info = _phase(run, first, variant, "flood")
        t0 = info["measured_from"]
        span = info["measured_to"] - t0
        for kind in KINDS:
            rows = _samples(run, variant, "flood", kind, first)
            marker, color = styles[(variant, kind)]
            ok = [r for r in rows if _ok(kind, r)]
            bad = [r for r in rows if not _ok(kind, r)]
            right.scatter(
                [offset + r["start"] - t0 for r in ok],
                [r["latency"] * 1000 for r in ok],
                s=10,
                marker=marker,
                color=color,
                alpha=0.7,
                label=f"{variant}: {kind}",
            )
            if bad:
                right.scatter(
                    [offset + r["start"] - t0 for r in bad],
                    [r["latency"] * 1000 for r in bad],
                    s=30,
                    marker="x",
                    color=color,
                    label=f"{variant}: {kind} failed / timed out",
                )
        failed = [
            offset + r["start"] - t0
            for kind in ("ready", "live")
            for r in _samples(run, variant, "flood", kind, first)
            if r["status"] != 200 and t0 <= r["start"] <= info["measured_to"]
        ]
        if failed:
            right.scatter(failed, [1.0] * len(failed), marker="|", color="black", s=30)
        ticks.append((offset + span / 2, f"{variant} under the flood (round {first + 1}, {span:.0f} s)"))
        offset += span + 10
        right.axvline(offset - 5, color="grey", lw=0.8)
    right.set_yscale("log")
    right.set_ylabel("latency ms (| at 1 ms: a failed probe)")
    right.set_xticks([p for p, _ in ticks], [t for _, t in ticks], fontsize=8)
    right.legend(fontsize=7, loc="center right", markerscale=2)
    right.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
