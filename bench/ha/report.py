"""Statistics, tables, the plot and the ``docs/benchmarks.md`` section of a high-availability drill run.

Per event, over its window (from the fault command to the end of the time after the undo), separately for reads
(product list and detail, cart read) and writes (cart add, checkout): requests, failures by status and error code
(``0`` = no answer: a client timeout or a connection error), latency quantiles (nearest rank, failures at the time
they took) and the recovery time: from the fault (or the undo) to the answer of the first success after which every
request of the class succeeded until the undo, ``-`` when none failed. The longest gap between two successful
writes' answers shows a stall that produced no error. Then the order audit: every ``201`` order looked up on the
final leader.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import quantile

MARKER = "bench-ha"
CLASSES = ("read", "write", "auth")
OK_STATUS = {"cart_add": 201, "checkout": 201, "register": 201}
X = "\u00d7"
REFUSALS = ("read_only_mode", "overloaded")  # 5xx codes of a request refused before it ran
TIMING = re.compile(r" (?:after|in) \d+(?:\.\d+)? s\b")


@dataclass
class Run:
    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    _by_class: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def records_of(self, klass: str) -> list[dict[str, Any]]:
        if klass not in self._by_class:
            self._by_class[klass] = [r for r in self.records if r["klass"] == klass]
        return self._by_class[klass]


def load(path: Path) -> Run:
    lines = (path / "requests.jsonl").read_text().splitlines()
    return Run(path, [json.loads(line) for line in lines if line.strip()], json.loads((path / "meta.json").read_text()))


def scan_log(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "500": len(re.findall(r'"status": 500\b|HTTP/[\d.]+" 500 ', text)),
        "tracebacks": text.count("Traceback"),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
    }


def ok(r: dict[str, Any]) -> bool:
    return r["status"] == OK_STATUS.get(r["kind"], 200)


def label(r: dict[str, Any]) -> str:
    if r["status"] == 0:
        return "no answer (timeout)" if r["error"] == "timeout" else "no answer (connection)"
    return f"{r['status']} {r['code']}".strip()


def _f(v: float | None, digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.{digits}f}"


def window(run: Run, lo: float, hi: float, klass: str | None = None) -> list[dict[str, Any]]:
    return [r for r in run.records if lo <= r["start"] < hi and (klass is None or r["klass"] == klass)]


def recovery(rows: list[dict[str, Any]], t0: float, t1: float) -> float | None:
    """Seconds from ``t0`` to the answer of the first success after which every request sent before ``t1``
    succeeded; None when none failed; ``inf`` when none succeeded after the last failure."""
    mine = sorted((r for r in rows if r["start"] + r["latency"] >= t0 and r["start"] < t1), key=lambda r: r["start"])
    failed = [r for r in mine if not ok(r)]
    if not failed:
        return None
    last = failed[-1]["start"]
    after = [r["start"] + r["latency"] for r in mine if r["start"] > last and ok(r)]
    return max(0.0, min(after) - t0) if after else float("inf")


def longest_gap(rows: list[dict[str, Any]], t0: float, t1: float) -> float:
    """The longest time in [t0, t1] without a successful answer."""
    ends = sorted(r["start"] + r["latency"] for r in rows if ok(r) and t0 <= r["start"] + r["latency"] <= t1)
    points = [t0, *ends, t1]
    return max((b - a for a, b in itertools.pairwise(points)), default=t1 - t0)


@dataclass(frozen=True)
class EventStat:
    name: str
    label: str
    requests: int
    n: dict[str, int]
    failed: dict[str, int]
    errors: dict[str, Counter[str]]
    failed_after_undo: dict[str, int]
    errors_after_undo: dict[str, Counter[str]]
    recovery_fault: dict[str, float | None]
    recovery_undo: dict[str, float | None]
    write_gap: float
    p50: dict[str, float]
    p99: dict[str, float]
    base_p99: dict[str, float]
    leader: str
    redis: str
    cli: str


def _cli_line(info: dict[str, Any]) -> str:
    parts = []
    for key in ("fault_cli", "undo_cli"):
        cli = info.get(key)
        if cli:
            rc = "" if cli["rc"] == 0 else f" (exit {cli['rc']})"
            parts.append(f"`{cli['command']}` {cli['seconds']:.1f} s{rc}")
    return "; ".join(parts)


def event_stats(run: Run, info: dict[str, Any]) -> EventStat:
    lo, hi = info["fault_at"], info["end"]
    undo_at = info.get("undo_at", hi)
    rows = {k: window(run, lo, hi, k) for k in CLASSES}
    base = {k: window(run, info["quiet_from"], lo, k) for k in CLASSES}
    return EventStat(
        name=info["name"],
        label=info["label"],
        requests=sum(len(v) for v in rows.values()),
        n={k: len(v) for k, v in rows.items()},
        failed={k: sum(1 for r in v if not ok(r)) for k, v in rows.items()},
        errors={k: Counter(label(r) for r in v if not ok(r)) for k, v in rows.items()},
        failed_after_undo={k: sum(1 for r in v if not ok(r) and r["start"] >= undo_at) for k, v in rows.items()},
        errors_after_undo={
            k: Counter(label(r) for r in v if not ok(r) and r["start"] >= undo_at) for k, v in rows.items()
        },
        recovery_fault={k: recovery(run.records_of(k), lo, undo_at) for k in CLASSES},
        recovery_undo={k: recovery(run.records_of(k), undo_at, hi) if "undo_at" in info else None for k in CLASSES},
        write_gap=longest_gap(run.records_of("write"), lo, hi),
        p50={k: quantile([r["latency"] * 1000 for r in v], 0.5) for k, v in rows.items()},
        p99={k: quantile([r["latency"] * 1000 for r in v], 0.99) for k, v in rows.items()},
        base_p99={k: quantile([r["latency"] * 1000 for r in v], 0.99) for k, v in base.items()},
        leader=f"{info.get('leader_before') or '-'} → {info.get('leader_after') or '-'}",
        redis=f"{info.get('redis_master_before') or '-'} → {info.get('redis_master_after') or '-'}",
        cli=_cli_line(info),
    )


def _rec(v: float | None) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return "not recovered"
    return f"{v:.1f}"


def _errors(c: Counter[str]) -> str:
    return ", ".join(f"{k} {X}{n}" for k, n in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def _after(s: EventStat, klass: str) -> str:
    return f" ({s.failed_after_undo[klass]})" if s.failed_after_undo[klass] else ""


def event_table(run: Run) -> tuple[list[str], list[list[str]]]:
    head = [
        "event",
        "requests",
        "reads failed (of which after the undo)",
        "writes failed (of which after the undo)",
        "write recovery s",
        "read recovery s",
        "fault held s",
        "longest write gap s",
        "read p50 / p99 ms",
        "write p50 / p99 ms",
        "leader",
        "ha commands",
    ]
    rows = []
    for info in run.meta["events"]:
        s = event_stats(run, info)
        rows.append(
            [
                s.label,
                str(s.requests),
                f"{s.failed['read']} of {s.n['read']}" + _after(s, "read"),
                f"{s.failed['write']} of {s.n['write']}" + _after(s, "write"),
                _rec(s.recovery_fault["write"]),
                _rec(s.recovery_fault["read"]),
                _f(info["undo_at"] - info["fault_at"], 1) if info.get("undo_at") is not None else "-",
                f"{s.write_gap:.1f}",
                f"{_f(s.p50['read'])} / {_f(s.p99['read'])}",
                f"{_f(s.p50['write'])} / {_f(s.p99['write'])}",
                s.leader,
                s.cli,
            ]
        )
    return head, rows


def error_table(run: Run) -> tuple[list[str], list[list[str]]]:
    head = [
        "event",
        "reads: errors by status / code",
        "writes: errors by status / code",
        "auth (login, refresh)",
        "answered by (fault to undo / after the undo)",
    ]
    rows = []
    for info in run.meta["events"]:
        s = event_stats(run, info)
        undo_at = info.get("undo_at", info["end"])
        spans = [(info["fault_at"], undo_at)] + ([(undo_at, info["end"])] if "undo_at" in info else [])
        served = " / ".join(_hosts(window(run, lo, hi)) for lo, hi in spans)
        rows.append([s.label, _errors(s.errors["read"]), _errors(s.errors["write"]), _errors(s.errors["auth"]), served])
    return head, rows


def _hosts(rows: list[dict[str, Any]]) -> str:
    counts = Counter(r.get("host") or "?" for r in rows if r["status"])
    return ", ".join(f"{h} {n}" for h, n in sorted(counts.items())) or "-"


def quiet_windows(run: Run) -> list[tuple[float, float]]:
    """The baselines: from the end of one event (or the start) to the next fault."""
    return [(e["quiet_from"], e["fault_at"]) for e in run.meta["events"]]


def overall_table(run: Run) -> tuple[list[str], list[list[str]]]:
    head = ["class", "window", "requests", "failed", "p50 ms", "p99 ms", "worst ms", "errors by status / code"]
    rows = []
    kinds = {"read": "list, detail, cart", "write": "cart add, checkout", "auth": "login, refresh"}
    for klass in CLASSES:
        mine = run.records_of(klass)
        quiet = [r for r in mine if any(lo <= r["start"] < hi for lo, hi in quiet_windows(run))]
        for name, rows_ in (("whole drill", mine), ("baselines only", quiet)):
            ms = [r["latency"] * 1000 for r in rows_]
            errors = Counter(label(r) for r in rows_ if not ok(r))
            rows.append(
                [
                    f"{klass} ({kinds[klass]})",
                    name,
                    str(len(rows_)),
                    str(sum(errors.values())),
                    _f(quantile(ms, 0.5)),
                    _f(quantile(ms, 0.99)),
                    _f(max(ms) if ms else None),
                    _errors(errors),
                ]
            )
    return head, rows


def audit_lines(run: Run) -> list[str]:
    a = run.meta["audit"]
    # Runs before the refusals were told apart listed them too: a refusal ran nothing (and is looked up anyway).
    unknown = {k: v for k, v in a["unknown_outcome"].items() if not any(c in k for c in REFUSALS)}
    answered = sum(v["answered"] for v in unknown.values())
    committed = sum(v["committed"] for v in unknown.values())
    detail = "; ".join(f"{k}: {v['answered']} ({v['committed']} committed)" for k, v in sorted(unknown.items()))
    lines = [
        f"**Orders acknowledged (`201`): {a['acknowledged']}; found on the final leader: {a['found']}; "
        f"lost: {a['lost']}.**" + (f" Lost ids: {a['lost_ids']}." if a["lost"] else ""),
        f"Checkouts whose outcome the client does not know (a 5xx other than `read_only_mode` or `overloaded`, "
        f"or no answer): "
        f"{answered}, of which {committed} committed (their `Idempotency-Key` is in the idempotency records, "
        f"which commit with the order; a retry with the same key answers the order)"
        + (f" — {detail}" if detail else "")
        + ".",
        f"Orders in the database: {a['orders_in_db']} ({a['unacknowledged_in_db']} without a `201` the client "
        f"saw; refused checkouts that committed anyway: {len(a['refused_but_committed'])}).",
    ]
    for info in run.meta["events"]:
        sb = info.get("split_brain")
        if not sb:
            continue
        if "error" in sb:
            lines.append(
                f"Split brain: {sb['node']}'s PostgreSQL could not be read on port {sb['port']}: {sb['error']}."
            )
            continue
        lines.append(
            f"Split brain: with its Patroni dead, {sb['node']}'s PostgreSQL (its own port {sb['port']}) was "
            f"{'a standby' if sb['in_recovery'] else 'still a primary'} (synchronous_standby_names "
            f"`{sb['sync_standby_names'] or '(empty)'}`); it held {sb['orders_since']} orders made since the fault, "
            f"{len(sb['only_on_deposed'])} of them absent on the new leader, "
            f"**{len(sb['acknowledged_only_on_deposed'])} acknowledged with a `201`**."
        )
    return lines


def machine_line(run: Run) -> str:
    m, meta = run.meta["machine"], run.meta
    c = meta["setup"]["cluster"]
    git = meta["git"]
    changed = f" + uncommitted changes to {', '.join(git['changed_files'])}" if git["changed_files"] else ""
    return (
        f"on {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), Python {m['python']}, PostgreSQL "
        f"{c.get('postgresql')}, {c.get('patroni', 'Patroni')}, {(c.get('haproxy') or 'HAProxy').split(' - ')[0]}; "
        f"load average before {meta['loadavg']['before']}, after {meta['loadavg']['after']}; commit "
        f"`{git['commit'][:10]}`{changed}; {meta['created']}"
    )


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def text_report(run: Run) -> str:
    out = [
        f"HA drill {run.path.name}: measured {machine_line(run)}",
        "",
        "Per event (window: fault to the end of the time after the undo)",
        _text(*event_table(run)),
        "",
        "Errors per event",
        _text(*error_table(run)),
        "",
        "Overall",
        _text(*overall_table(run)),
        "",
        *audit_lines(run),
    ]
    return "\n".join(out)


def _notes(run: Run) -> list[str]:
    """What each event's ``ha`` command said about its own outcome (devstack's timings)."""
    lines = []
    for info in run.meta["events"]:
        said = []
        for key in ("fault_cli", "undo_cli"):
            cli = info.get(key) or {}
            notes = [n.split(" ha: ", 1)[-1] for n in cli.get("notes", []) if TIMING.search(n)]
            if notes:
                said.append(f"`{cli['command']}`: " + "; ".join(notes))
        if said:
            lines.append(f"- {info['label']}: " + " — ".join(said) + ".")
    return lines


def _reading(run: Run) -> list[str]:
    """Bullets drawn from the numbers (no judgement the data does not carry)."""
    stats = [event_stats(run, info) for info in run.meta["events"]]
    clean = [s.label for s in stats if not any(s.failed.values())]
    lines = []
    for s in stats:
        if not any(s.failed.values()):
            continue
        parts = []
        for klass, name in (("write", "writes"), ("read", "reads"), ("auth", "auth requests")):
            if s.failed[klass]:
                parts.append(
                    f"{s.failed[klass]} of {s.n[klass]} {name} failed ({_errors(s.errors[klass])}), "
                    + (
                        f"succeeding again {_rec(s.recovery_fault[klass])} s after the fault"
                        if s.recovery_fault[klass] is not None
                        else "none between the fault and the undo"
                    )
                    + (
                        f" ({s.failed_after_undo[klass]} of them after the undo: "
                        f"{_errors(s.errors_after_undo[klass])}; all succeeding again "
                        f"{_rec(s.recovery_undo[klass])} s after the undo)"
                        if s.failed_after_undo[klass]
                        else ""
                    )
                )
        lines.append(f"- **{s.label}:** " + "; ".join(parts) + f"; longest time without a write {s.write_gap:.1f} s.")
    if clean:
        lines.append(f"- **No request failed** during: {'; '.join(clean)}.")
    reads = run.records_of("read")
    lines.append(
        f"- Reads over the whole drill: {sum(1 for r in reads if not ok(r))} failed of {len(reads)} (a read "
        "goes to a replica through HAProxy's `replicas` port when one is current, else to the primary or a stale "
        "replica, whichever answers; and HAProxy's app backend retries a `GET` that met a "
        "connection failure, an empty response or a `503` on the other host; a `POST` only when it could not be "
        "sent at all)."
    )
    return lines


def section(run: Run) -> str:
    meta = run.meta
    args = meta["args"]
    n_events = len(meta["events"])
    logs = meta.get("app_logs", {})
    workers = meta["settings"].get("workers per app host", 1)
    pat = meta["setup"].get("patroni", {})
    dcs = ", ".join(
        f"`{k}: {pat[k]}`" for k in ("synchronous_mode", "synchronous_mode_strict", "failsafe_mode") if k in pat
    ) + "".join(f", {k} {pat[k]} s" for k in ("ttl", "loop_wait", "retry_timeout") if k in pat)
    out = [
        "## High availability: the drill on the scale-out topology (`bench/ha`)",
        "",
        "### How to run it",
        "",
        "```sh",
        f".venv/bin/python -m bench.ha             # ~{max(1, round(meta['seconds']['run'] / 60))} min: the "
        "topology up, 7 events under load, the order audit",
        ".venv/bin/python -m bench.ha --publish   # also writes docs/bench/ha.png and this section",
        ".venv/bin/python -m bench.ha --report bench/results/<run>   # re-render from the raw data",
        ".venv/bin/python -m bench.ha --events switchover leader-host --quiet 5 --after 8   # a quick look",
        "```",
        "",
        "It needs what `python -m devstack ha` needs (PostgreSQL 15, Patroni, etcd, redis-server, redis-sentinel, "
        "HAProxy: `scripts/bootstrap.sh`). It runs its own topology (`--name bench-ha --port-base 64100`: ports "
        "64100-64161, checked free first; after a hard kill `python -m devstack --name bench-ha ha down`) and takes it "
        "down on success, error, Ctrl-C or SIGTERM. Each run leaves `requests.jsonl` (every request), `meta.json` "
        "(event times, every `ha` command with what it said, the order audit, machine, commit), the topology's "
        "logs, `report.txt`, `report.md` and the plot in `bench/results/ha-<time>/`.",
        "",
        "### What it does",
        "",
        "**The topology** (`python -m devstack ha up`): etcd (one member), three Patroni nodes managing PostgreSQL "
        f"({dcs}), Redis master + replica under "
        "three Sentinels, one HAProxy (`primary` checked against Patroni's `GET /primary`, `replicas` against "
        "`GET /replica?lag=16MB`, the `app` HTTP frontend over two Bulwark gunicorn hosts, app-1 and app-2, "
        f"{workers} worker{'s' if workers != 1 else ''} each). Bulwark gets the database and Redis "
        "through configuration only (`ha env`: `DATABASE_URL` through HAProxy's primary port, "
        "`DATABASE_REPLICA_URLS` through its replicas port, `REDIS_SENTINELS`). The rate limiter stays on "
        "(every request counts in Redis through the Sentinels) with limits one client address cannot reach "
        "(`RATELIMIT_API=100000/m` and the like).",
        "",
        f"**The load** (bounded, closed loop): {args['clients']} shoppers, each a thread with its own keep-alive "
        f"session (no retries, 10 s timeout), one step every {args['interval']:g} s whatever the answers take, "
        "all through HAProxy's app frontend. A step is, by weight: the product list or a product (52 %), the cart "
        "(12 %), a cart add (16 %), a checkout (14 %: `POST /api/orders/` with a fresh `Idempotency-Key`, a cart "
        "add first when the cart is empty), a token refresh (5 %, rotating) or a log-in (1 %: a PBKDF2 check). "
        "Reads are the list, product and cart reads; writes the cart adds and checkouts.",
        "",
        f"**The events**, in this order, each after the topology is healthy again and {args['quiet']:g} s of quiet "
        f"load (the baseline), each `ha` command waiting for its own outcome, then {args['after']:g} s more:",
        "",
        "1. `switchover`: Patroni's planned switchover to the synchronous standby;",
        "2. `kill leader`: the leader's host lost (its Patroni and its PostgreSQL SIGKILLed together), then "
        "`start` (the old leader rejoins through pg_rewind);",
        "3. `hang leader`: the leader's Patroni and postmaster family SIGSTOPped for 20 s, then `resume`;",
        "4. `kill leader-patroni`: the leader's Patroni alone killed, its PostgreSQL still running (split brain); "
        "its PostgreSQL is read on its own port before `start` brings Patroni back (it demotes and rewinds);",
        "5. `kill etcd` for 20 s, then `start etcd` (failsafe mode: the leader keeps leading while every member "
        "answers);",
        "6. `kill redis-master`: the Sentinels promote the replica; then `start` (the old master rejoins as replica);",
        "7. `kill app`: app-1 SIGKILLed; HAProxy takes it out; then `start app-1`.",
        "",
        "**Recovery time** (per class): from the fault (or the undo) to the answer of the first success after "
        "which every request of that class succeeded until the undo (the end, when there is none); `-` when "
        "none failed there; failures after the undo are counted in brackets; and the longest "
        "time without a successful write answer shows a stall that produced no error. Latency is client-side, "
        "over every request sent in the event's window, failures included at the time they took.",
        "",
        "**The order audit:** after the last event every order that was answered `201` is looked up by id on the "
        "final leader (through `DATABASE_URL`); checkouts whose outcome the client could not know are looked up by "
        "their `Idempotency-Key`.",
        "",
        "### Results",
        "",
        f"Measured {machine_line(run)}; {n_events} events, the drill {meta['seconds']['drill']} s.",
        "",
        *audit_lines(run),
        "",
        _md(*event_table(run)),
        "",
        "Errors by status and code per event (`0`: no answer); *answered by* counts the answers per app host, "
        "found in the hosts' logs by their `X-Request-Id` (`?`: no request line names it — a `503 overloaded` "
        "refusal is logged as a `serving_shed` summary, not per request):",
        "",
        _md(*error_table(run)),
        "",
        "The whole drill, and its baselines alone:",
        "",
        _md(*overall_table(run)),
        "",
        "What the `ha` commands said about their own outcome:",
        "",
        *_notes(run),
        "",
        "App host logs: "
        + "; ".join(
            f"{h} {v['500']} HTTP 500, {v['tracebacks']} tracebacks, {v['worker_timeouts']} worker timeouts"
            for h, v in logs.items()
        )
        + ".",
        "",
        "![Latency over time through the HA drill, events shaded](bench/ha.png)",
        "",
        "Every request of the drill over time (log scale): reads and writes, failures as x at the time they took; "
        "each event's window shaded from its fault, its undo dashed.",
        "",
        "### Reading the numbers",
        "",
        *_reading(run),
        "",
        "### What the numbers do not show",
        "",
        "- A real network: everything runs on one machine's loopback, so a partition (a node that runs but cannot "
        "be reached) is only approximated by SIGSTOP (`hang`), and latencies are loopback latencies on a shared "
        "machine.",
        "- A production etcd: one member here (production runs 3 or 5); its outage is the whole DCS at once.",
        "- Repetition: one drill, one run of each event; the recovery times move by a Patroni loop (2 s) or a "
        "HAProxy check interval (1 s) between runs.",
        "- Load beyond the bounded one: a few shoppers in closed loops, not a saturated server.",
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
        "auth": ("#756bb1", "#3f007d", "auth"),
    }
    for klass in CLASSES:
        color, dark, name = styles[klass]
        rows = run.records_of(klass)
        good = [r for r in rows if ok(r)]
        bad = [r for r in rows if not ok(r)]
        ax.scatter(
            [r["start"] for r in good],
            [max(r["latency"] * 1000, 0.5) for r in good],
            s=4 if klass == "read" else 7,
            color=color,
            alpha=0.45 if klass == "read" else 0.6,
            lw=0,
            label=f"{name} ({len(good)})",
        )
        if bad:
            ax.scatter(
                [r["start"] for r in bad],
                [max(r["latency"] * 1000, 0.5) for r in bad],
                s=26,
                marker="x",
                color=dark,
                lw=1.1,
                label=f"{name} failed ({len(bad)})",
            )
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    shades = ("#fdd0a2", "#c6dbef")
    for i, info in enumerate(run.meta["events"]):
        ax.axvspan(info["fault_at"], info["end"], color=shades[i % 2], alpha=0.35, lw=0)
        ax.axvline(info["fault_at"], color="#a50f15", lw=0.9)
        if info.get("undo_at") is not None:
            ax.axvline(info["undo_at"], color="#525252", lw=0.9, ls="--")
        ax.text(
            info["fault_at"] + 1,
            0.98,
            f"{i + 1}. {info['name']}",
            transform=trans,
            fontsize=8,
            va="top",
            rotation=90,
            color="#67000d",
        )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started (red line: fault; dashed: undo)")
    ax.set_ylabel("latency ms")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right", ncol=3, markerscale=1.5)
    a = run.meta["audit"]
    ax.set_title(
        f"HA drill: {a['acknowledged']} orders acknowledged, {a['lost']} lost; "
        f"{len(run.records)} requests from {run.meta['args']['clients']} shoppers",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
