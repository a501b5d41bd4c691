"""Run the high-availability drill: the scale-out topology's faults one after another under a bounded mixed load.

The run

1. takes down any leftover of the topology (``python -m devstack --name bench-ha --port-base 64100 ha down``),
   checks that nothing listens on its ports (N .. N+61), and brings it up with its two app hosts (``ha up``):
   etcd, three Patroni nodes (``synchronous_mode: true``, ``failsafe_mode: true``), Redis master + replica under
   three Sentinels, HAProxy, app-1 and app-2 behind HAProxy's ``app`` frontend. Every ``ha`` command runs with
   the environment the app hosts inherit: generous rate limits (one client address sends everything) with the
   limiter on, so every request counts in Redis through the Sentinels;
2. loads the demo catalog if ``ha up`` did not, gives every product a stock no run exhausts, registers the
   shoppers over the API and logs them in;
3. starts the load (:mod:`bench.ha.load`: ``--clients`` shoppers, one step every ``--interval`` s each, all
   through HAProxy's app frontend), then runs the events in order. Each event: the cluster healthy (``ha
   status``), ``--quiet`` seconds of baseline, the fault (a ``ha`` command, which waits for its outcome), the
   degraded state held, the undo (``start`` / ``resume``; none after a switchover), ``--after`` seconds more.
   After the split-brain event the deposed leader's PostgreSQL is read on its own port before Patroni comes
   back;
4. stops the load, waits for the topology to be healthy and looks up every order that was answered ``201`` on
   the final leader (through ``DATABASE_URL``), and every checkout whose outcome the client does not know
   (``503 outcome_unknown``, a 5xx or no answer) in the idempotency records, which commit with the order;
5. copies the topology's logs next to the results and takes the topology down (also on error, Ctrl-C or
   SIGTERM).

Raw results go to ``bench/results/ha-<time>/``: ``requests.jsonl`` (every request), ``meta.json`` (events,
``ha`` command timings, the order audit, machine, commit) and ``logs/``. :mod:`bench.ha.report` renders them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

from bench.ha import report
from bench.ha.load import Load, Recorder, Shopper, register
from bench.harness import (
    ROOT,
    add_common_args,
    announce_code,
    args_meta,
    load_average,
    manage,
    publish_run,
    results_dir,
    say,
    server_env,
    sigterm_as_interrupt,
)

DOCS_PLOT = ROOT / "docs" / "bench" / "ha.png"
PREFIX = "ha"
SPAN = 62  # devstack ha uses N .. N+61
PASSWORD = "bench ha correct horse battery"  # noqa: S105 - throwaway accounts on a throwaway topology
RATE_LIMITS = {
    "RATELIMIT_ENABLED": "true",
    "RATELIMIT_API": "100000/m",
    "RATELIMIT_CHECKOUT": "100000/m",
    "RATELIMIT_LOGIN": "100000/m",
    "RATELIMIT_LOGIN_USER": "100000/m",
    "RATELIMIT_REFRESH": "100000/m",
    "RATELIMIT_REGISTER": "100000/h",
}
# 5xx answers that say the request was refused before it ran (anything else from a checkout may have committed).
REFUSALS = ("read_only_mode", "overloaded")
TIMING = re.compile(r"(?P<what>[^;:]*?) (?:after|in) (?P<seconds>\d+(?:\.\d+)?) s\b")


@dataclass(frozen=True)
class Event:
    name: str
    label: str
    fault: tuple[str, ...]
    undo: tuple[str, ...] | None
    hold: float = 0.0  # at least this long from the fault to the undo
    settle: float = 5.0  # and at least this long after the fault command returned


EVENTS = (
    Event("switchover", "Patroni switchover", ("switchover",), None),
    Event("leader-host", "leader's host killed (Patroni + PostgreSQL)", ("kill", "leader"), ("start",)),
    Event("leader-hang", "leader hung (SIGSTOP, 20 s)", ("hang", "leader"), ("resume",), hold=20.0, settle=2.0),
    Event("split-brain", "leader's Patroni alone killed (split brain)", ("kill", "leader-patroni"), ("start",)),
    Event("etcd", "etcd killed (20 s, failsafe mode)", ("kill", "etcd"), ("start", "etcd"), hold=20.0, settle=0.0),
    Event("sentinel", "Redis master killed (Sentinel failover)", ("kill", "redis-master"), ("start",)),
    Event("app-host", "app host app-1 killed", ("kill", "app"), ("start", "app-1")),
)


# ----------------------------------------------------------------------------------------------------------
# The ha command line
# ----------------------------------------------------------------------------------------------------------


def parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


@dataclass
class Ha:
    """``python -m devstack --name N --port-base B ha ...``, run with the app hosts' environment."""

    name: str
    port_base: int
    env: dict[str, str]
    epoch: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 240.0, check: bool = True, quiet: bool = False) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "devstack", "--name", self.name, "--port-base", str(self.port_base), "ha", *args]
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            rc = -1
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or "") + (
                f"\n(bench: no answer within {timeout:.0f} s)"
            )
        ended = time.monotonic()
        notes = [line.removeprefix("devstack: ") for line in err.splitlines() if line.strip()]
        entry = {
            "command": " ".join(args),
            "rc": rc,
            "from": round(started - self.epoch, 3) if self.epoch else None,
            "to": round(ended - self.epoch, 3) if self.epoch else None,
            "seconds": round(ended - started, 2),
            "notes": notes,
            "timings": [
                {"what": m["what"].strip(), "seconds": float(m["seconds"])} for n in notes for m in TIMING.finditer(n)
            ],
            "stdout": out,
        }
        if not quiet:
            for note in notes:
                say(f"  devstack: {note}")
            say(f"ha {' '.join(args)}: exit {rc} after {entry['seconds']:.1f} s")
        if args[0] not in ("status", "env"):
            self.log.append({k: v for k, v in entry.items() if k != "stdout"})
        if check and rc != 0:
            raise RuntimeError(f"`ha {' '.join(args)}` exited {rc}:\n" + "\n".join(notes[-20:]))
        return entry

    def status(self) -> dict[str, Any]:
        entry = self("status", "--json", check=False, quiet=True, timeout=60)
        try:
            return json.loads(entry["stdout"])
        except ValueError:
            return {"healthy": False, "problems": [f"status failed: {entry['notes'][-3:]}"], "processes": {}}

    def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not status.get("healthy") and time.monotonic() < deadline:
            time.sleep(1.0)
            status = self.status()
        if not status.get("healthy"):
            say(f"the topology is not healthy after {timeout:.0f} s: {status.get('problems')}")
        return status


def ports_busy(port_base: int) -> list[int]:
    from devstack.procs import port_in_use

    return [port for port in range(port_base, port_base + SPAN) if port_in_use(port)]


def cli_env() -> dict[str, str]:
    """What every ``ha`` command runs with: the app hosts inherit it (``devstack/ha/app.py``)."""
    return server_env(
        **RATE_LIMITS,
        SECRET_KEY=secrets.token_urlsafe(64),
        JWT_SECRET=secrets.token_urlsafe(48),
    )


# ----------------------------------------------------------------------------------------------------------
# The database checks
# ----------------------------------------------------------------------------------------------------------


def db(url: str, timeout: int = 5) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=timeout)


def node_url(database_url: str, port: int) -> str:
    """``DATABASE_URL`` pointed at one node's own PostgreSQL port (past HAProxy)."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "connect_timeout=2", ""))


def max_order_id(url: str) -> int:
    with db(url) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM shop_order").fetchone()[0])


def split_brain_check(
    database_url: str, deposed: str, port: int, since_id: int, acknowledged: dict[int, float]
) -> dict[str, Any]:
    """The deposed leader's PostgreSQL, read on its own port while its Patroni is dead: is it still a primary,
    which orders does it hold beyond ``since_id``, and which of those the new leader lacks (acknowledged ones are
    the split brain's cost)."""
    found: dict[str, Any] = {"node": deposed, "port": port, "since_order_id": since_id}
    try:
        with db(node_url(database_url, port), timeout=3) as conn:
            found["in_recovery"] = bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
            found["sync_standby_names"] = conn.execute("SHOW synchronous_standby_names").fetchone()[0]
            there = [r[0] for r in conn.execute("SELECT id FROM shop_order WHERE id > %s", (since_id,))]
    except psycopg.Error as exc:
        found["error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        return found
    with db(database_url) as conn:
        leader_ids = {r[0] for r in conn.execute("SELECT id FROM shop_order WHERE id > %s", (since_id,))}
    only_there = sorted(set(there) - leader_ids)
    found.update(
        orders_since=len(there),
        only_on_deposed=only_there,
        acknowledged_only_on_deposed=[i for i in only_there if i in acknowledged],
    )
    say(
        f"split brain: {deposed}'s PostgreSQL (port {port}) in recovery {found['in_recovery']}, "
        f"{len(there)} orders past #{since_id}, {len(only_there)} absent on the new leader, "
        f"{len(found['acknowledged_only_on_deposed'])} of them acknowledged"
    )
    return found


def order_audit(database_url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every 201 order on the final leader; the checkouts whose outcome the client does not know, looked up."""
    acked = {r["order_id"]: r for r in records if r["kind"] == "checkout" and r["status"] == 201 and r["order_id"]}
    unknown = [
        r
        for r in records
        if r["kind"] == "checkout" and (r["status"] == 0 or r["status"] >= 500) and r["code"] not in REFUSALS
    ]
    refused = [r for r in records if r["kind"] == "checkout" and r["status"] not in (0, 201) and r not in unknown]
    with db(database_url) as conn:
        found = {r[0] for r in conn.execute("SELECT id FROM shop_order WHERE id = ANY(%s)", (list(acked),))}
        total = int(conn.execute("SELECT count(*) FROM shop_order").fetchone()[0])
        keys = [r["key"] for r in unknown + refused if r["key"]]
        rows = conn.execute(
            "SELECT key, response_status, response_body FROM resilience_idempotencyrecord WHERE key = ANY(%s)",
            (keys,),
        ).fetchall()
    committed = {key: (status, body) for key, status, body in rows}

    def order_of(body: str) -> int | None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return int(json.loads(body).get("id"))
        return None

    def label(r: dict[str, Any]) -> str:
        return f"{r['status']} {r['code'] or r['error']}".strip()

    unknown_by: dict[str, dict[str, int]] = {}
    for r in unknown:
        entry = unknown_by.setdefault(label(r), {"answered": 0, "committed": 0})
        entry["answered"] += 1
        entry["committed"] += r["key"] in committed
    refused_committed = [r["key"] for r in refused if r["key"] in committed]
    committed_ids = {order_of(body) for status, body in committed.values()}
    lost = sorted(set(acked) - found)
    audit = {
        "acknowledged": len(acked),
        "found": len(found),
        "lost": len(lost),
        "lost_ids": lost,
        "orders_in_db": total,
        "unacknowledged_in_db": total - len(found),
        "unknown_outcome": unknown_by,
        "unknown_committed_order_ids": sorted(i for i in committed_ids if i is not None),
        "refused_but_committed": refused_committed,
    }
    say(
        f"orders: {len(acked)} acknowledged (201), {len(found)} found on the final leader, {len(lost)} lost; "
        f"{total} in the database; unknown outcomes {unknown_by}"
    )
    return audit


def cluster_facts(database_url: str) -> dict[str, Any]:
    with db(database_url) as conn:
        facts = {
            "postgresql": conn.execute("SHOW server_version").fetchone()[0],
            "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],
            "synchronous_standby_names": conn.execute("SHOW synchronous_standby_names").fetchone()[0],
        }
    for tool, argv in (("patroni", ["patroni", "--version"]), ("haproxy", ["haproxy", "-v"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            line = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.splitlines()
            facts[tool] = line[0].strip() if line else ""
    return facts


def patroni_settings() -> dict[str, str]:
    """The DCS timings and modes of the template ``ha up`` renders (``deploy/patroni/patroni.yml``)."""
    keys = ("ttl", "loop_wait", "retry_timeout", "synchronous_mode", "synchronous_mode_strict", "failsafe_mode")
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (ROOT / "deploy" / "patroni" / "patroni.yml").read_text().splitlines():
            m = re.match(r"\s*(\w+):\s*([^\s#]+)", line)
            if m and m[1] in keys and m[1] not in found:
                found[m[1]] = m[2]
    return found


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


# ----------------------------------------------------------------------------------------------------------
# The drill
# ----------------------------------------------------------------------------------------------------------


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class Drill:
    def __init__(self, args: argparse.Namespace, ha: Ha, env: dict[str, str], recorder: Recorder) -> None:
        self.args = args
        self.ha = ha
        self.env = env
        self.recorder = recorder
        self.events: list[dict[str, Any]] = []

    def rel(self, t: float) -> float:
        return round(t - self.recorder.epoch, 3)

    def acknowledged(self) -> dict[int, float]:
        return {r.order_id: r.start for r in self.recorder.snapshot() if r.order_id and r.status == 201}

    def run(self, event: Event) -> None:
        args, ha = self.args, self.ha
        status = ha.wait_healthy()
        info: dict[str, Any] = {
            "name": event.name,
            "label": event.label,
            "fault": " ".join(event.fault),
            "undo": " ".join(event.undo) if event.undo else None,
            "healthy_before": bool(status.get("healthy")),
            "problems_before": status.get("problems", []),
            "leader_before": status.get("leader"),
            "redis_master_before": status.get("redis_master"),
        }
        say(f"--- {event.name}: {event.label} (leader {info['leader_before']}, redis {info['redis_master_before']})")
        info["quiet_from"] = self.rel(time.monotonic())
        time.sleep(args.quiet)
        if event.name == "split-brain":
            since = max_order_id(self.env["DATABASE_URL"])
            deposed = status.get("leader")
            port = (status.get("processes", {}).get(deposed, {}).get("ports") or [None])[0]
        t_fault = time.monotonic()
        info["fault_at"] = self.rel(t_fault)
        fault = ha(*event.fault, check=False)
        t_done = time.monotonic()
        info["fault_done"] = self.rel(t_done)
        info["fault_cli"] = {k: v for k, v in fault.items() if k != "stdout"}
        info["mid_status"] = {k: ha.status().get(k) for k in ("leader", "redis_master", "problems")}
        if event.undo:
            sleep_until(max(t_fault + event.hold, t_done + event.settle))
            if event.name == "split-brain" and deposed and port:  # just before Patroni comes back and rewinds it
                info["split_brain"] = split_brain_check(
                    self.env["DATABASE_URL"], deposed, int(port), since, self.acknowledged()
                )
                info["split_brain"]["at"] = self.rel(time.monotonic())
            info["undo_at"] = self.rel(time.monotonic())
            undo = ha(*event.undo, check=False, timeout=300)
            info["undo_done"] = self.rel(time.monotonic())
            info["undo_cli"] = {k: v for k, v in undo.items() if k != "stdout"}
        time.sleep(args.after)
        info["end"] = self.rel(time.monotonic())
        after = ha.status()
        info["leader_after"] = after.get("leader")
        info["redis_master_after"] = after.get("redis_master")
        info["healthy_after"] = bool(after.get("healthy"))
        info["problems_after"] = after.get("problems", [])
        mine = [r for r in self.recorder.snapshot() if info["fault_at"] <= r.start < info["end"]]
        bad = [r for r in mine if not r.ok]
        say(
            f"{event.name}: {len(mine)} requests, {len(bad)} failed; leader {info['leader_before']} -> "
            f"{info['leader_after']}, redis {info['redis_master_before']} -> {info['redis_master_after']}"
        )
        self.events.append(info)


def copy_logs(ha: Ha, out: Path) -> None:
    """The topology's logs (Patroni, PostgreSQL through Patroni, HAProxy, the app hosts) next to the results."""
    run_dir = ha.env.get("_RUN_DIR")
    if not run_dir or not Path(run_dir).is_dir():
        return
    dest = out / "logs"
    dest.mkdir(exist_ok=True)
    for log in Path(run_dir).glob("*.log"):
        with contextlib.suppress(OSError):
            shutil.copyfile(log, dest / log.name)


def request_hosts(logs: Path) -> dict[str, str]:
    """request id -> the app host that logged the request (``bulwark.request`` lines of app-1.log, app-2.log)."""
    found: dict[str, str] = {}
    for host in ("app-1", "app-2"):
        path = logs / f"{host}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if '"bulwark.request"' not in line:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                rid = json.loads(line).get("request_id")
                if rid and rid != "-":
                    found[rid] = host
    return found


def setup(args: argparse.Namespace, ha: Ha, out: Path) -> tuple[dict[str, str], list[int], dict[str, Any]]:
    facts: dict[str, Any] = {}
    say(f"taking down any leftover of '{args.name}', then checking ports {args.port_base}..{args.port_base + SPAN - 1}")
    ha("down", check=False)
    busy = ports_busy(args.port_base)
    if busy:
        raise RuntimeError(f"ports {busy} are in use: choose another --port-base")
    up = ha("up", *(["--workers", str(args.workers)] if args.workers else []), timeout=420)
    facts["up_seconds"] = up["seconds"]
    env = parse_env(ha("env", quiet=True)["stdout"])
    ha.env["_RUN_DIR"] = env.get("DEVSTACK_HA_RUN_DIR", "")
    manage_env = server_env(
        DATABASE_URL=env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=env["DATABASE_REPLICA_URLS"],
        REDIS_SENTINELS=env["REDIS_SENTINELS"],
        REDIS_SENTINEL_MASTER=env["REDIS_SENTINEL_MASTER"],
        SECRET_KEY=ha.env["SECRET_KEY"],
        JWT_SECRET=ha.env["JWT_SECRET"],
    )
    with db(env["DATABASE_URL"]) as conn:
        products = int(conn.execute("SELECT count(*) FROM shop_product").fetchone()[0])
    facts["seeded_by_up"] = products > 0
    if not products:
        say("ha up did not load a catalog: manage.py seed_demo through HAProxy's primary port")
        manage("seed_demo", "-v", "0", env=manage_env)
    with db(env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE shop_product SET stock = 1000000")
    base = env["BULWARK_HA_APP_URL"]
    listing = requests.get(f"{base}/api/products/", params={"page_size": 100}, timeout=30)
    listing.raise_for_status()
    product_ids = [p["id"] for p in listing.json()["results"]]
    facts["products"] = len(product_ids)
    facts["cluster"] = cluster_facts(env["DATABASE_URL"])
    facts["patroni"] = patroni_settings()
    return env, product_ids, facts


def measure(args: argparse.Namespace, ha: Ha, out: Path) -> None:
    run_started = time.monotonic()
    code = announce_code()
    env, product_ids, facts = setup(args, ha, out)
    base = env["BULWARK_HA_APP_URL"]
    setup_rec = Recorder(time.monotonic())
    tag = secrets.token_hex(3)
    names = [f"bench-ha-{tag}-{i:02d}" for i in range(args.clients)]
    say(f"registering and logging in {len(names)} shoppers through {base}")
    for name in names:
        register(base, setup_rec, name, PASSWORD)
    shoppers = [
        Shopper(base, name, PASSWORD, product_ids, setup_rec, interval=args.interval, seed=args.seed + i)
        for i, name in enumerate(names)
    ]
    for shopper in shoppers:
        if not shopper.login():
            raise RuntimeError(f"{shopper.username} could not log in: {setup_rec.records[-1]}")
    recorder = Recorder(time.monotonic())  # the drill's clock starts with the load
    ha.epoch = recorder.epoch
    for shopper in shoppers:
        shopper.recorder = recorder
    load = Load(shoppers)
    drill = Drill(args, ha, env, recorder)
    load_before = load_average()
    selected = [e for e in EVENTS if not args.events or e.name in args.events]
    say(f"load: {args.clients} shoppers, a step every {args.interval:g} s each; events: {[e.name for e in selected]}")
    load.start()
    try:
        for event in selected:
            drill.run(event)
    finally:
        load.stop()
    load_after = load_average()
    final = ha.wait_healthy(120)
    records = [asdict(r) for r in recorder.snapshot()]
    for r in records:
        r["start"], r["latency"], r["wall"] = round(r["start"], 4), round(r["latency"], 5), round(r["wall"], 3)
    records.sort(key=lambda r: r["start"])
    audit = order_audit(env["DATABASE_URL"], records)
    copy_logs(ha, out)
    hosts = request_hosts(out / "logs")
    for r in records:
        r["host"] = r["host"] or hosts.get(r["rid"], "")
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "settings": {**RATE_LIMITS, "workers per app host": args.workers or 1},
        "setup": facts,
        "events": drill.events,
        "cli": ha.log,
        "final": {k: final.get(k) for k in ("leader", "redis_master", "healthy", "problems")},
        "audit": audit,
        "app_logs": {name: report.scan_log(out / "logs" / f"{name}.log") for name in ("app-1", "app-2")},
        "loadavg": {"before": load_before, "after": load_after},
        "machine": machine_facts(),
        "git": code,
        "seconds": {"drill": round(time.monotonic() - recorder.epoch), "run": round(time.monotonic() - run_started)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__.split("\n\n")[0])
    add_common_args(p, name="bench-ha", port_base=64100, prefix=PREFIX, docs_plot=DOCS_PLOT)
    p.add_argument("--clients", type=int, default=8, help="shoppers, one thread each (%(default)s)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between a shopper's steps (%(default)s)")
    p.add_argument("--quiet", type=float, default=10.0, help="baseline seconds before each fault (%(default)s)")
    p.add_argument("--after", type=float, default=15.0, help="seconds after each undo (%(default)s)")
    p.add_argument("--workers", type=int, default=None, help="gunicorn workers per app host (devstack's default: 1)")
    p.add_argument(
        "--events", nargs="*", choices=[e.name for e in EVENTS], help="only these events, in the drill's order"
    )
    p.add_argument("--seed", type=int, default=23, help="shoppers' choice seed (%(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        render(args.report, args.publish)
        return 0
    out = results_dir(args, PREFIX)
    ha = Ha(args.name, args.port_base, cli_env())
    started = time.monotonic()
    interrupted = False
    try:
        with sigterm_as_interrupt():
            measure(args, ha, out)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        interrupted = True
    except Exception as exc:
        say(f"the drill failed: {type(exc).__name__}: {exc}; taking the topology down")
        raise
    finally:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            with contextlib.suppress(Exception):
                copy_logs(ha, out)
            down = ha("down", check=False, timeout=120)
            if down["rc"] != 0:
                say(f"could not take the topology down: run `python -m devstack --name {args.name} ha down`")
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if interrupted:
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; raw results in {out}")
    render(out, args.publish)
    return 0
