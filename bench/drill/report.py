"""Render a drill run (``bench/results/drill-<time>/``): per-phase tables, a PASS/FAIL line per criterion with its
evidence, the targets met or missed, the ``docs/benchmarks.md`` section and the latency-over-time plot.

Every figure is computed here from the raw results (``requests.jsonl``, ``samples.jsonl``, ``meta.json``), so
``python -m bench.drill --report DIR`` re-renders (and re-judges) an earlier run.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import quantile

MARKER = "bench-drill"
LOAD = ("read", "write", "auth")
OK_STATUS = {"cart_add": 201, "checkout": 201, "register": 201, "race": 201}
REJECTED_WRITE = ("read_only_mode", "outcome_unknown")
CONFIG_SECONDS = 10.0  # "fails fast": the misconfigured server must be gone within this


@dataclass
class Run:
    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    samples: list[dict[str, Any]]

    def phase(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.meta["phases"] if p["name"] == name), None)

    def between(self, start: float, end: float, classes: tuple[str, ...] = LOAD) -> list[dict[str, Any]]:
        return [r for r in self.records if start <= r["start"] < end and r["klass"] in classes]

    def in_phase(self, phase: dict[str, Any], classes: tuple[str, ...] = LOAD) -> list[dict[str, Any]]:
        """The requests sent during the phase, except that one still in flight when the next phase's first fault
        was applied counts for that phase (it met the fault), as in ``bench.failover``."""
        return [r for r in self.records if r["klass"] in classes and phase_of(self, r) == phase["name"]]


def phase_of(run: Run, r: dict[str, Any]) -> str:
    phases = run.meta["phases"]
    for i, p in enumerate(phases):
        if p["start"] <= r["start"] < p["end"]:
            nxt = phases[i + 1] if i + 1 < len(phases) else None
            fault = nxt["marks"][0]["t"] if nxt and nxt["marks"] else None
            if fault is not None and r["start"] + r["latency"] > fault:
                return nxt["name"]
            return p["name"]
    return ""


def load(path: Path) -> Run:
    path = Path(path)
    records = [json.loads(line) for line in (path / "requests.jsonl").read_text().splitlines() if line.strip()]
    samples_file = path / "samples.jsonl"
    samples = (
        [json.loads(line) for line in samples_file.read_text().splitlines() if line.strip()]
        if samples_file.exists()
        else []
    )
    return Run(path, json.loads((path / "meta.json").read_text()), records, samples)


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "500": len(re.findall(r'"status": 500\b|HTTP/[\d.]+" 500 ', text)),
        "tracebacks": text.count("Traceback"),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
    }


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------


def ok(r: dict[str, Any]) -> bool:
    return r["status"] == OK_STATUS.get(r["kind"], 200)


def failed(r: dict[str, Any]) -> bool:
    """No answer, or a server error (a 503 that refused a write during a primary outage included)."""
    return r["status"] == 0 or r["status"] >= 500


def label(r: dict[str, Any]) -> str:
    if r["status"] == 0:
        return "no answer (timeout)" if r["error"] == "timeout" else f"no answer ({r['error'] or 'connection'})"
    return f"{r['status']} {r['code']}".strip()


def ms(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v * 1000:.0f}" if v >= 0.0095 else f"{v * 1000:.1f}"


def mark_at(phase: dict[str, Any] | None, prefix: str) -> float | None:
    if not phase:
        return None
    return next((m["t"] for m in phase["marks"] if m["label"].startswith(prefix)), None)


def errors_of(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(label(r) for r in rows if not ok(r))


def degraded(run: Run, phase: dict[str, Any]) -> dict[str, Any]:
    """What /health and /metrics said while the phase ran."""
    samples = [s for s in run.samples if phase["start"] <= s["t"] < phase["end"]]
    areas: dict[str, Counter[str]] = {}
    statuses = Counter(s.get("status", "?") for s in samples)
    for s in samples:
        for area, what in (s.get("degraded") or {}).items():
            areas.setdefault(area, Counter())[what.split(":", 1)[0]] += 1
    details: dict[str, str] = {}
    for s in samples:
        for area, what in (s.get("degraded") or {}).items():
            details.setdefault(area, what)
    metrics: dict[str, tuple[float, float]] = {}
    for s in samples:
        for series, value in (s.get("metrics") or {}).items():
            lo, hi = metrics.get(series, (value, value))
            metrics[series] = (min(lo, value), max(hi, value))
    notable = []
    for series, (lo, hi) in sorted(metrics.items()):
        name = series.split("{", 1)[0]
        if name == "bulwark_ratelimit_memory_mode" and hi >= 1:
            notable.append("ratelimit_memory_mode=1")
        elif name == "bulwark_db_read_only_mode" and hi >= 1:
            notable.append("read_only_mode=1")
        elif name == "bulwark_db_node_up" and lo < 1:
            notable.append(f"node_up{series[len(name) :]}=0")
        elif name == "bulwark_breaker_state" and hi >= 1 and 'state="closed"' not in series:
            notable.append(f"breaker_state{series[len(name) :]} max {hi:g}")
        elif name == "bulwark_payments_pending" and hi > 0:
            notable.append(f"payments_pending max {hi:g}")
        elif name == "bulwark_workers_live" and lo < run.meta["settings"]["WEB_CONCURRENCY"]:
            notable.append(f"workers_live min {lo:g}")
        elif name.endswith("_total") and hi > lo:
            notable.append(f"{series.removeprefix('bulwark_')} +{hi - lo:g}")
    return {
        "samples": len(samples),
        "health": dict(statuses),
        "areas": {a: dict(c) for a, c in areas.items()},
        "details": details,
        "metrics": notable,
    }


def phase_rows(run: Run) -> list[dict[str, Any]]:
    rows = []
    for phase in run.meta["phases"]:
        mine = run.in_phase(phase)
        lat = [r["latency"] for r in mine if r["status"]]
        reads = [r for r in mine if r["klass"] == "read"]
        rows.append(
            {
                "name": phase["name"],
                "title": phase["title"],
                "seconds": phase["end"] - phase["start"],
                "requests": len(mine),
                "ok": sum(ok(r) for r in mine),
                "errors": errors_of(mine),
                "failed_reads": sum(not ok(r) for r in reads),
                "p50": quantile(lat, 0.5),
                "p95": quantile(lat, 0.95),
                "p99": quantile(lat, 0.99),
                "degraded": degraded(run, phase),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------
# Criteria and targets
# ----------------------------------------------------------------------------------------------------------


def _criterion(name: str, title: str, passed: bool | None, evidence: str, gates: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "passed": bool(passed),
        "ran": passed is not None,
        "evidence": evidence,
        "gates": gates,
    }


def crit_primary(run: Run) -> dict[str, Any]:
    title = "the primary fails -> the service continues on the replica; promoted, writes resume"
    phase = run.phase("primary")
    if not phase:
        return _criterion("primary", title, None, "phase not run")
    killed, promoted = mark_at(phase, "primary killed"), mark_at(phase, "replica promoted")
    if killed is None or promoted is None:
        return _criterion("primary", title, False, f"marks missing: {phase['marks']}")
    rows = run.between(killed, phase["end"])
    reads = [r for r in rows if r["klass"] == "read"]
    auth = [r for r in rows if r["klass"] == "auth"]
    outage_writes = [r for r in rows if r["klass"] == "write" and r["start"] < promoted]
    bad_writes = [r for r in outage_writes if not ok(r) and r["code"] not in REJECTED_WRITE]
    after = sorted(
        (r for r in rows if r["klass"] == "write" and r["start"] >= promoted and ok(r)), key=lambda r: r["start"]
    )
    resumed = (after[0]["start"] + after[0]["latency"] - promoted) if after else None
    bad_reads = [r for r in reads if not ok(r)]
    bad_auth = [r for r in auth if not ok(r)]
    rejected = Counter(r["code"] for r in outage_writes if not ok(r))
    passed = not bad_reads and not bad_writes and not bad_auth and resumed is not None
    evidence = (
        f"{len(reads)} reads after the kill, {len(bad_reads)} failed {dict(errors_of(reads))}; "
        f"{len(outage_writes)} writes before the promotion: {sum(ok(r) for r in outage_writes)} ok, "
        f"refused {dict(rejected)}, {len(bad_writes)} otherwise failed; auth {len(auth)}, {len(bad_auth)} failed; "
        + (f"writes resumed {resumed:.2f} s after the promotion" if resumed is not None else "writes never resumed")
    )
    return _criterion("primary", title, passed, evidence)


def crit_jwt(run: Run) -> dict[str, Any]:
    title = "the JWT secret rotates -> users stay authenticated (no 401 for a pre-rotation token)"
    phase = run.phase("jwt")
    if not phase:
        return _criterion("jwt", title, None, "phase not run")
    f = phase["facts"]
    rotated = mark_at(phase, "rotate_jwt_key exited") or phase["start"]
    after = [r for r in run.records if r["start"] >= rotated and r["klass"] in (*LOAD, "probe")]
    old = [r for r in after if r["kid"] and r["kid"] == f.get("old_kid")]
    old_401 = [r for r in old if r["status"] == 401]
    new_signed = sum(1 for r in after if r["kid"] and r["kid"] != f.get("old_kid"))
    load_401 = [r for r in run.in_phase(phase) if r["status"] == 401]
    probe = f.get("old_access_statuses", [])
    passed = (
        f.get("rotate_rc") == 0
        and not old_401
        and not load_401
        and probe
        and all(s == 200 for s in probe)
        and f.get("old_refresh_ok")
        and f.get("new_kid")
        and f.get("new_kid") != f.get("old_kid")
    )
    evidence = (
        f"rotate_jwt_key exit {f.get('rotate_rc')}; kid {f.get('old_kid')} -> {f.get('new_kid')}; "
        f"{len(old)} requests with a pre-rotation token after it, {len(old_401)} answered 401; "
        f"probe's old access token on fresh connections {probe.count(200)}/{len(probe)} x 200, old refresh token "
        f"{'refreshed' if f.get('old_refresh_ok') else 'REFUSED'}; {new_signed} requests carried new-key tokens; "
        f"401s in the phase {len(load_401)}"
    )
    return _criterion("jwt", title, passed, evidence)


def crit_config(run: Run) -> dict[str, Any]:
    title = "a misconfiguration -> Bulwark fails fast with a clear error"
    phase = run.phase("config")
    if not phase:
        return _criterion("config", title, None, "phase not run")
    f = phase["facts"]
    load_failed = [r for r in run.in_phase(phase) if not ok(r)]
    rc = f.get("gunicorn_rc")
    passed = (
        rc not in (None, 0)
        and f.get("gunicorn_seconds", 99) <= CONFIG_SECONDS
        and f.get("message")
        and f.get("names_variable")
        and not f.get("traceback")
        and not f.get("secret_leaked")
        and f.get("validate_env_rc") == 2
        and not load_failed
    )
    evidence = (
        f"gunicorn with JWT_SECRET too short exited {rc} after {f.get('gunicorn_seconds')} s "
        f"(limit {CONFIG_SECONDS:g} s), 'Bulwark cannot start' {'shown' if f.get('message') else 'MISSING'}, "
        f"traceback {'YES' if f.get('traceback') else 'none'}, "
        f"secret {'LEAKED' if f.get('secret_leaked') else 'not shown'}"
        f' — "{f.get("message_line", "")}"; validate_env exit {f.get("validate_env_rc")} '
        f'("{f.get("validate_env_last", "")}"); the running server meanwhile: {len(load_failed)} failed requests'
    )
    return _criterion("config", title, passed, evidence)


def crit_redis(run: Run) -> dict[str, Any]:
    title = "Redis goes down -> rate limiting continues from memory (a login brute force is still refused)"
    phase = run.phase("redis")
    if not phase:
        return _criterion("redis", title, None, "phase not run")
    f = phase["facts"]
    killed = mark_at(phase, "redis killed") or phase["start"]
    started = mark_at(phase, "redis started") or phase["end"]
    brute = f.get("brute", [])
    allowed = sum(a["status"] == 401 for a in brute)
    refused = sum(a["status"] == 429 for a in brute)
    other = [a for a in brute if a["status"] not in (401, 429)]
    limit, workers = f.get("limit", 0), f.get("workers", 1)
    most = math.ceil(limit / workers) * workers
    rows = run.between(killed, phase["end"])
    down = run.between(killed, started)
    load_failed = [r for r in rows if failed(r)]
    memory = any(
        v >= 1
        for s in run.samples
        if killed <= s["t"] < started
        for k, v in (s.get("metrics") or {}).items()
        if k.startswith("bulwark_ratelimit_memory_mode")
    )
    passed = brute and allowed <= most and refused >= 1 and not other and not load_failed
    evidence = (
        f"brute force on one account with Redis dead: {allowed} wrong-password answers (401) let through, "
        f"{refused} refused 429 of {len(brute)} (limit {limit}/h, {workers} workers: at most {most} in memory), "
        f"{len(other)} other; the load: {len(down)} requests while Redis was down, {len(load_failed)} failed "
        f"after the kill {dict(errors_of(load_failed))}; memory mode in /metrics: {'yes' if memory else 'not seen'}"
    )
    return _criterion("redis", title, passed, evidence)


def crit_payment(run: Run) -> dict[str, Any]:
    title = "the payment gateway fails -> the breaker falls back (pending_payment, paid once when back)"
    phase = run.phase("payment")
    if not phase:
        return _criterion("payment", title, None, "phase not run")
    f = phase["facts"]
    hang, back = mark_at(phase, "gateway hangs") or phase["start"], mark_at(phase, "gateway back") or phase["end"]
    checkouts = [r for r in run.in_phase(phase) if r["kind"] == "checkout"]
    during = [r for r in checkouts if hang <= r["start"] < back]
    bad = [r for r in checkouts if not ok(r)]
    pending = [r for r in during if r["order_status"] == "pending_payment"]
    slow = max((r["latency"] for r in during), default=0.0)
    orders = f.get("orders", {})
    unpaid = {i: s for i, s in orders.items() if s != "paid"}
    twice = f.get("charged_twice", [])
    breaker = any(
        v >= 1
        for s in run.samples
        if hang <= s["t"] < back
        for k, v in (s.get("metrics") or {}).items()
        if k.startswith("bulwark_breaker_state") and "payment" in k and 'state="closed"' not in k
    )
    passed = bool(pending) and not bad and orders and not unpaid and not twice
    evidence = (
        f"{len(during)} checkouts while the gateway hung: {len(pending)} x 201 pending_payment, slowest "
        f"{slow:.2f} s; {len(bad)} checkouts failed in the phase {dict(errors_of(bad))}; breaker open in /metrics: "
        f"{'yes' if breaker else 'not seen'}; at the phase's end {len(orders)} orders of the phase, "
        f"{len(orders) - len(unpaid)} paid, not paid {unpaid or 'none'}; charged twice: {twice or 'none'}"
    )
    return _criterion("payment", title, passed, evidence)


def crit_oversell(run: Run) -> dict[str, Any]:
    title = "no oversell: buyers racing for a product with stock N"
    phase = run.phase("oversell")
    if not phase:
        return _criterion("oversell", title, None, "phase not run")
    f = phase["facts"]
    answers = Counter(f"{a['status']} {a['code']}".strip() for a in f.get("answers", []))
    won = sum(a["status"] == 201 for a in f.get("answers", []))
    n = f.get("stock_before", 0)
    passed = (
        won <= n
        and f.get("orders_in_db", 99) <= n
        and f.get("stock_after", -1) >= 0
        and f.get("quantity_sold", -1) + f.get("stock_after", -1) == n
        and won == f.get("orders_in_db")
    )
    evidence = (
        f"{len(f.get('answers', []))} buyers, stock {n}: answers {dict(answers)}; {f.get('orders_in_db')} orders hold "
        f"it, {f.get('quantity_sold')} sold, stock left {f.get('stock_after')}"
    )
    return _criterion("oversell", title, passed, evidence)


def criteria(run: Run) -> list[dict[str, Any]]:
    return [crit_primary(run), crit_jwt(run), crit_config(run), crit_redis(run), crit_payment(run), crit_oversell(run)]


def request_log(run: Run, rids: set[str]) -> dict[str, dict[str, Any]]:
    """The ``bulwark.request`` log records of these request ids (gunicorn.log)."""
    found: dict[str, dict[str, Any]] = {}
    path = run.path / "gunicorn.log"
    if not rids or not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        if '"bulwark.request"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("request_id") in rids:
            found[rec["request_id"]] = rec
    return found


def _near_reads(run: Run, t: float) -> list[float]:
    return [x["latency"] for x in run.records if x["klass"] == "read" and abs(x["start"] - t) <= 1.0]


def _why_slow(run: Run, slow: list[dict[str, Any]], killed: float) -> str:
    """What the run's own data says about the rejections over 100 ms: when they came, and whether the reads sent
    within a second of them were slow too (the machine busy) or not (something on the write path)."""
    logged = request_log(run, {r.get("rid", "") for r in slow[:4]} - {""})
    parts = []
    for r in slow[:4]:
        near = _near_reads(run, r["start"])
        server = logged.get(r.get("rid", ""))
        seen = (
            f"; the server logged {server.get('duration_ms')} ms, fallbacks {server.get('db_fallbacks') or 'none'}"
            if server
            else ""
        )
        parts.append(
            f"{r['start'] - killed:.1f} s after the kill ({r['latency'] * 1000:.0f} ms{seen}; reads within 1 s: "
            f"median {ms(quantile(near, 0.5))} ms, p95 {ms(quantile(near, 0.95))} ms)"
        )
    if all(quantile(_near_reads(run, r["start"]), 0.95) > 0.1 for r in slow):
        cause = (
            "the reads around them were slow too: the machine was busy, not the write path (load average "
            f"{run.meta['loadavg']['before']} before the drill, {run.meta['loadavg']['after']} after)"
        )
    elif all(r["start"] - killed < 1.0 for r in slow):
        cause = "within a second of the kill, before every worker had marked the primary down"
    else:
        cause = "the reads around them were fast: the drill's data does not explain it (see gunicorn.log)"
    return f"{len(slow)} over 100 ms: " + "; ".join(parts) + f" - {cause}"


def targets(run: Run) -> list[dict[str, Any]]:
    out = []
    faults = [p for p in run.meta["phases"] if p["name"] in ("redis", "primary")]
    if faults:
        per = {p["name"]: sum(not ok(r) for r in run.in_phase(p, ("read",))) for p in faults}
        out.append(
            {
                "title": "0 failed reads through every single-node fault",
                "met": not any(per.values()),
                "figure": ", ".join(f"{k}: {v} failed reads" for k, v in per.items()),
                "why": "",
            }
        )
    phase = run.phase("primary")
    killed, promoted = mark_at(phase, "primary killed"), mark_at(phase, "replica promoted")
    if phase and killed is not None and promoted is not None:
        rej = sorted(
            (r for r in run.between(killed, promoted, ("write",)) if r["code"] in REJECTED_WRITE),
            key=lambda r: r["start"],
        )
        rest = [r["latency"] for r in rej[1:]]
        p99 = quantile(rest, 0.99)
        first = rej[0]["latency"] if rej else float("nan")
        met = bool(rest) and p99 <= 0.1
        slow = [r for r in rej[1:] if r["latency"] > 0.1]
        why = _why_slow(run, slow, killed) if not met and slow else ""
        out.append(
            {
                "title": "writes during a primary outage rejected in <= 100 ms p99 after the first",
                "met": met,
                "figure": f"{len(rej)} rejected; first {ms(first)} ms, then p99 {ms(p99)} ms, "
                f"max {ms(max(rest, default=float('nan')))} ms",
                "why": why,
            }
        )
    phase = run.phase("redis")
    if phase:
        killed = mark_at(phase, "redis killed") or phase["start"]
        bad = [r for r in run.between(killed, phase["end"]) if not ok(r)]
        out.append(
            {
                "title": "0 failed requests when Redis dies",
                "met": not bad,
                "figure": f"{len(bad)} failed {dict(errors_of(bad))}",
                "why": "",
            }
        )
    over = crit_oversell(run)
    if over["ran"]:
        out.append(
            {
                "title": "no oversell with 20 concurrent buyers",
                "met": over["passed"],
                "figure": over["evidence"],
                "why": "",
            }
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# Text and Markdown
# ----------------------------------------------------------------------------------------------------------


def _errors(c: Counter[str]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in c.most_common()) or "none"


def _degraded(d: dict[str, Any]) -> str:
    parts = [f"{a} {'/'.join(sorted(s))}" for a, s in sorted(d["areas"].items())]
    text = "; ".join(parts) or "nothing"
    if d["metrics"]:
        text += " | " + ", ".join(d["metrics"][:6])
    return text


def text_report(run: Run) -> str:
    m = run.meta
    lines = [
        f"Resilience drill, {m['created']} — commit {m['git']['commit'][:10]}"
        + (" (+ uncommitted changes)" if m["git"].get("changed_files") else ""),
        f"{m['settings']['WEB_CONCURRENCY']} gunicorn workers, {m['settings']['clients']} shoppers (a step every "
        f"{m['settings']['interval']:g} s each), {m['machine']['cpus']} CPUs ({m['machine']['cpu_model']}); "
        f"drill {m['seconds']['drill']} s, whole run {m['seconds']['run']} s; load average {m['loadavg']['before']} "
        f"-> {m['loadavg']['after']}",
        "",
        f"{'phase':<9} {'secs':>5} {'reqs':>6} {'ok':>6} {'p50':>6} {'p95':>6} {'p99':>6}  errors",
    ]
    rows = phase_rows(run)
    for r in rows:
        lines.append(
            f"{r['name']:<9} {r['seconds']:5.0f} {r['requests']:6d} {r['ok']:6d} {ms(r['p50']):>6} {ms(r['p95']):>6} "
            f"{ms(r['p99']):>6}  {_errors(r['errors'])}"
        )
    lines += ["", "What /health and /metrics said, per phase:"]
    for r in rows:
        lines.append(f"  {r['name']:<9} {_degraded(r['degraded'])}")
    lines += ["", "Marks:"]
    for p in m["phases"]:
        for mk in p["marks"]:
            lines.append(f"  {p['name']:<9} t={mk['t']:6.1f}s {mk['label']}")
    lines += ["", "Criteria:"]
    for c in criteria(run):
        verdict = "PASS" if c["passed"] else ("SKIP" if not c["ran"] else "FAIL")
        lines.append(f"  {verdict}  {c['name']}: {c['title']}")
        lines.append(f"        {c['evidence']}")
    lines += ["", "Targets (reported, not asserted):"]
    for t in targets(run):
        lines.append(f"  {'met   ' if t['met'] else 'MISSED'}  {t['title']}: {t['figure']}")
        if t["why"]:
            lines.append(f"          why: {t['why']}")
    lines.append(f"\ngunicorn log: {m['log']}")
    return "\n".join(lines)


def section(run: Run) -> str:
    m = run.meta
    rows = phase_rows(run)
    out = [
        "## Resilience drill: the seed's five criteria under load (`bench/drill`)",
        "",
        "### How to run it",
        "",
        "```sh",
        "make drill                       # or: .venv/bin/python -m bench.drill [--phases ...] [--scale 0.5]",
        "python -m bench.drill --report bench/results/drill-<time> [--publish]   # re-render (and re-judge) a run",
        "```",
        "",
        "It builds its own stack (`bench-drill`, ports 61600-61605), starts the fake payment gateway and Bulwark "
        f"under gunicorn ({m['settings']['WEB_CONCURRENCY']} workers, multi-host `DATABASE_URL`), and drives "
        f"{m['settings']['clients']} shoppers on loopback (browse, log in, refresh, add to cart, check out; a step "
        f"every {m['settings']['interval']:g} s each) through the phases below, one line of progress a second on "
        "stderr. It exits 1 when a criterion fails. Raw results: `requests.jsonl`, `samples.jsonl` (what `/health` "
        "and `/metrics` said, every second), `meta.json`; tables in `report.txt` / `report.md`, plot `drill.png`.",
        "",
        f"### Results ({m['created'][:10]}, commit `{m['git']['commit'][:7]}`, {m['machine']['cpus']} CPUs, "
        f"drill {m['seconds']['drill']} s, whole run {m['seconds']['run']} s)",
        "",
        "| phase | requests | ok | p50 ms | p95 ms | p99 ms | errors | what degraded (`/health`, `/metrics`) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['name']}: {r['title']} | {r['requests']} | {r['ok']} | {ms(r['p50'])} | {ms(r['p95'])} | "
            f"{ms(r['p99'])} | {_errors(r['errors'])} | {_degraded(r['degraded'])} |"
        )
    out += ["", "| criterion | verdict | evidence |", "|---|---|---|"]
    for c in criteria(run):
        verdict = "PASS" if c["passed"] else ("not run" if not c["ran"] else "**FAIL**")
        out.append(f"| {c['title']} | {verdict} | {c['evidence']} |")
    out += ["", "| target | | figure |", "|---|---|---|"]
    for t in targets(run):
        out.append(
            f"| {t['title']} | {'met' if t['met'] else '**missed**'} | {t['figure']}"
            + (f" — why: {t['why']}" if t["why"] else "")
            + " |"
        )
    out += [
        "",
        "![Drill latency over time](bench/drill.png)",
        "",
        "Errors are counted by status and code for the shoppers' requests only; the brute force, the rotation "
        "probe and the race are reported in their criteria. A write refused with `503 read_only_mode` while the "
        "primary is down is the designed answer, listed under errors so its count and speed show.",
        "",
    ]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# The plot
# ----------------------------------------------------------------------------------------------------------


def plot(run: Run, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    fig, ax = plt.subplots(figsize=(15, 5.6))
    styles = {
        "read": ("#3182bd", "#08306b", "reads"),
        "write": ("#e6550d", "#7f2704", "writes"),
        "auth": ("#31a354", "#00441b", "auth"),
    }
    for klass, (color, dark, name) in styles.items():
        rows = [r for r in run.records if r["klass"] == klass]
        good = [r for r in rows if ok(r)]
        bad = [r for r in rows if not ok(r)]
        ax.scatter(
            [r["start"] for r in good],
            [max(r["latency"] * 1000, 0.5) for r in good],
            s=5,
            color=color,
            alpha=0.5,
            lw=0,
            label=f"{name} ({len(good)})",
        )
        if bad:
            ax.scatter(
                [r["start"] for r in bad],
                [max(r["latency"] * 1000, 0.5) for r in bad],
                s=22,
                marker="x",
                color=dark,
                lw=1.0,
                label=f"{name} not ok ({len(bad)})",
            )
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    shades = ("#fdd0a2", "#c6dbef")
    verdicts = {c["name"]: c for c in criteria(run)}
    for i, p in enumerate(run.meta["phases"]):
        ax.axvspan(p["start"], p["end"], color=shades[i % 2], alpha=0.3, lw=0)
        c = verdicts.get(p["name"])
        tag = f" {'PASS' if c['passed'] else 'FAIL'}" if c and c["ran"] else ""
        ax.text(p["start"] + 0.5, 0.98, f"{p['name']}{tag}", transform=trans, fontsize=8, va="top", rotation=90)
        for mk in p["marks"]:
            ax.axvline(mk["t"], color="#a50f15", lw=0.8, alpha=0.8)
            ax.text(
                mk["t"] + 0.3,
                0.02,
                mk["label"][:34],
                transform=trans,
                fontsize=6,
                va="bottom",
                rotation=90,
                color="#67000d",
            )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started (shaded: phases; red lines: faults and undos)")
    ax.set_ylabel("latency ms")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right", ncol=3, markerscale=1.5)
    passed = sum(c["passed"] for c in verdicts.values() if c["ran"])
    ran = sum(c["ran"] for c in verdicts.values())
    ax.set_title(f"Resilience drill: {passed}/{ran} criteria pass; {len(run.records)} requests", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
