"""Run the resilience drill: the seed's five criteria, one phase each, under a bounded mixed load on one stack.

The run (``make drill``, ``python -m bench.drill``)

1. builds its own devstack stack (``bench-drill``, port base 61600: primary, replica, Redis on 61600..61602),
   migrates it and loads the demo catalog, starts the fake payment gateway (:mod:`devstack.fake_gateway`, in
   process) and Bulwark under gunicorn with ``--workers`` workers (3) against the stack's multi-host
   ``DATABASE_URL`` (``target_session_attrs=read-write``, so a promoted replica takes the writes). Rate limits
   are on, generous except the per-username log-in limit (``RATELIMIT_LOGIN_USER``, 8/h), which the brute force
   meets; the bulkheads are kept out of the way of the load (``WEB_THREADS=17``, every class limit 16);
2. registers and logs in ``--clients`` shoppers and 20 buyers (the race; one of them is the rotation probe,
   another the brute force's victim), then starts the load (:mod:`bench.drill.load`), a sampler (``/health``
   every second, ``/metrics`` every 2 s) and a progress line (stderr, once a second);
3. runs the phases in order (:data:`PHASES`): ``baseline``; ``config`` (a second gunicorn and ``manage.py
   validate_env`` with a too-short ``JWT_SECRET`` must exit non-zero within seconds with the one-paragraph
   report, while the running server keeps serving); ``jwt`` (``manage.py rotate_jwt_key`` under load; the
   probe's pre-rotation access token is used on every worker and its pre-rotation refresh token refreshed);
   ``redis`` (``kill -9`` Redis; a login brute force on the victim's account; Redis started again); ``payment``
   (the gateway hangs; checkouts go on; the gateway back, ``manage.py retry_payments``; every order of the phase
   paid, each charged once); ``oversell`` (20 buyers race for a product with stock 5 at a barrier; orders <= 5,
   stock never negative); ``primary`` last, since it changes the topology (``kill -9`` the primary, reads go
   on from the replica and writes are refused fast; the replica promoted, writes resume);
4. stops the load, saves ``requests.jsonl`` (every request), ``samples.jsonl`` (what ``/health`` and
   ``/metrics`` said) and ``meta.json`` (phases, their marks and facts, the settings, the machine, the commit),
   and takes everything down (also on error, Ctrl-C or SIGTERM). :mod:`bench.drill.report` renders it, and
   the exit code is 1 when a criterion fails.

Traffic goes to 127.0.0.1 only.
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
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from bench.drill import report
from bench.drill.load import Client, Load, Recorder, Shopper, register, send, session, token_kid
from bench.harness import (
    ROOT,
    Gunicorn,
    add_common_args,
    announce_code,
    args_meta,
    fresh_stack,
    load_average,
    manage,
    publish_run,
    run_bench,
    say,
    server_env,
)
from devstack import Stack
from devstack.fake_gateway import FakeGateway

DOCS_PLOT = ROOT / "docs" / "bench" / "drill.png"
PREFIX = "drill"
PASSWORD = "bench drill correct horse battery"  # noqa: S105 - throwaway accounts on a throwaway stack
BUYERS = 20
RACE_STOCK = 5
LOGIN_USER_LIMIT = 8  # per hour: the brute force meets it, the shoppers' few log-ins do not
BRUTE_ATTEMPTS = 30
QUIET_FILE = Path("/tmp/bulwark-bench-quiet")  # noqa: S108 - the machine's agreed "measuring now" flag
SERVING_OUT_OF_THE_WAY = {
    "WEB_THREADS": "17",
    **{f"SERVING_LIMIT_{name}": "16" for name in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN", "OPS")},
    **{f"SERVING_BUDGET_{name}": "60s" for name in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN", "OPS")},
}
RATE_LIMITS = {
    "RATELIMIT_ENABLED": "true",
    "RATELIMIT_API": "100000/m",
    "RATELIMIT_CHECKOUT": "100000/m",
    "RATELIMIT_LOGIN": "100000/m",
    "RATELIMIT_LOGIN_USER": f"{LOGIN_USER_LIMIT}/h",
    "RATELIMIT_REFRESH": "100000/m",
    "RATELIMIT_REGISTER": "100000/h",
}
GATEWAY = {
    "PAYMENT_GATEWAY_CONNECT_TIMEOUT": "1s",
    "PAYMENT_GATEWAY_TIMEOUT": "2s",
    "PAYMENT_GATEWAY_BREAKER_FAILURES": "3",
    "PAYMENT_GATEWAY_BREAKER_RESET": "10s",
}
BAD_JWT_SECRET = "drill-too-short"  # noqa: S105 - the misconfiguration under test (under 32 bytes)
METRIC_FAMILIES = (
    "bulwark_db_node_up",
    "bulwark_db_node_is_primary",
    "bulwark_db_read_only_mode",
    "bulwark_ratelimit_memory_mode",
    "bulwark_breaker_state",
    "bulwark_payments_pending",
    "bulwark_workers_live",
    "bulwark_read_only_rejections_total",
    "bulwark_fallbacks_total",
    "bulwark_requests_rerun_total",
)
METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)")

# (name, title, seconds) in the order they run; the criteria they check are in bench.drill.report.
PHASES = (
    ("baseline", "baseline", 15.0),
    ("config", "misconfigured start (JWT_SECRET too short)", 15.0),
    ("jwt", "JWT signing key rotated under load", 25.0),
    ("redis", "Redis kill -9 + login brute force, then started", 35.0),
    ("payment", "payment gateway hangs, then back + retry_payments", 40.0),
    ("oversell", f"{BUYERS} buyers race for stock {RACE_STOCK}", 10.0),
    ("primary", "primary kill -9, then replica promoted", 45.0),
)


# ----------------------------------------------------------------------------------------------------------
# /health and /metrics, sampled
# ----------------------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(METRIC_FAMILIES):
            continue
        m = METRIC_LINE.match(line)
        if m:
            with contextlib.suppress(ValueError):
                found[m["name"] + (m["labels"] or "")] = float(m["value"])
    return found


def degraded_areas(body: Any) -> dict[str, str]:
    """area -> ``status: detail`` for every /health area not at pass."""
    out: dict[str, str] = {}
    with contextlib.suppress(AttributeError, TypeError):
        for area, info in body["spofs"]["status"].items():
            if info.get("status") != "pass":
                out[area] = f"{info.get('status')}: {info.get('detail', '')}".strip()
    return out


class Sampler(threading.Thread):
    def __init__(self, base: str, recorder: Recorder) -> None:
        super().__init__(name="sampler", daemon=True)
        self.base = base
        self.recorder = recorder
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.http = session()

    def run(self) -> None:
        tick = 0
        while not self.stop_event.wait(1.0):
            sample: dict[str, Any] = {"t": round(self.recorder.now(), 2)}
            try:
                r = self.http.get(f"{self.base}/health", timeout=3)
                body = r.json()
                sample.update(http=r.status_code, status=body.get("status"), degraded=degraded_areas(body))
            except (requests.RequestException, ValueError) as exc:
                sample.update(http=0, status="unreachable", degraded={}, error=type(exc).__name__)
            if tick % 2 == 0:
                with contextlib.suppress(requests.RequestException):
                    sample["metrics"] = parse_metrics(self.http.get(f"{self.base}/metrics", timeout=3).text)
            tick += 1
            self.samples.append(sample)


class Progress(threading.Thread):
    """One line a second on stderr: phase, elapsed, requests, errors."""

    def __init__(self, drill: Drill) -> None:
        super().__init__(name="progress", daemon=True)
        self.drill = drill
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            rec = self.drill.recorder
            total, errors = rec.totals()
            worst = ", ".join(f"{k}x{v}" for k, v in rec.errors.most_common(3))
            print(
                f"[drill] {time.strftime('%H:%M:%S')} phase {self.drill.phase:<9} t={rec.now():6.1f}s "
                f"requests {total:6d}  errors {errors:4d}" + (f" ({worst})" if worst else ""),
                file=sys.stderr,
                flush=True,
            )


# ----------------------------------------------------------------------------------------------------------
# The drill
# ----------------------------------------------------------------------------------------------------------


class Drill:
    def __init__(self, args: argparse.Namespace, stack: Stack, env: dict[str, str], out: Path) -> None:
        self.args = args
        self.stack = stack
        self.env = env
        self.out = out
        self.recorder = Recorder(time.monotonic())
        self.phase = "setup"
        self.phases: list[dict[str, Any]] = []
        self.server: Gunicorn | None = None
        self.gateway: FakeGateway | None = None
        self.buyers: list[Client] = []
        self.race_product = 0

    # ---- bookkeeping ----------------------------------------------------------------------------------------

    def now(self) -> float:
        return round(self.recorder.now(), 3)

    def mark(self, label: str, t: float | None = None) -> None:
        """A mark at ``t`` (default now); a fault is marked at the instant its command was issued."""
        t = self.now() if t is None else round(t, 3)
        self.phases[-1]["marks"].append({"t": t, "label": label})
        say(f"  t={t:6.1f}s {label}")

    def facts(self) -> dict[str, Any]:
        return self.phases[-1]["facts"]

    def hold_until(self, t: float) -> None:
        delay = t - self.recorder.now()
        if delay > 0:
            time.sleep(delay)

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.url

    def db(self, sql: str) -> str:
        """SQL as superuser on the current primary (its values are the drill's own integers)."""
        node = "replica" if self.phase == "primary" else "primary"
        return self.stack.psql(node, sql).strip()

    # ---- the phases -----------------------------------------------------------------------------------------

    def run_phase(self, name: str, title: str, seconds: float) -> None:
        self.phase = name
        start = self.now()
        self.phases.append({"name": name, "title": title, "start": start, "end": None, "marks": [], "facts": {}})
        say(f"--- phase {name}: {title} ({seconds:.0f} s)")
        action: Callable[[float], None] | None = getattr(self, f"phase_{name}", None)
        if action is not None:
            action(start + seconds)
        self.hold_until(start + seconds)
        self.phases[-1]["end"] = self.now()

    def phase_config(self, end: float) -> None:
        bad = {**self.env, "JWT_SECRET": BAD_JWT_SECRET, "PORT": str(self.args.port_base + 4)}
        started = time.monotonic()
        self.mark("gunicorn started with JWT_SECRET too short")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "gunicorn", "settings.wsgi"],
                cwd=ROOT,
                env=bad,
                capture_output=True,
                text=True,
                timeout=30,
                start_new_session=True,
            )
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, output = None, f"(still running after 30 s) {exc.stdout or ''}{exc.stderr or ''}"
        seconds = time.monotonic() - started
        self.mark(f"misconfigured gunicorn exited {rc} after {seconds:.1f} s")
        started = time.monotonic()
        validate = subprocess.run(
            [sys.executable, "manage.py", "validate_env"], cwd=ROOT, env=bad, capture_output=True, text=True, timeout=60
        )
        report_lines = [line for line in output.splitlines() if "JWT_SECRET" in line]
        self.facts().update(
            gunicorn_rc=rc,
            gunicorn_seconds=round(seconds, 2),
            message="Bulwark cannot start" in output,
            names_variable=bool(report_lines),
            message_line=(report_lines[0].strip()[:300] if report_lines else ""),
            traceback="Traceback" in output,
            secret_leaked=BAD_JWT_SECRET in output,
            app_failed_to_load="App failed to load" in output,
            validate_env_rc=validate.returncode,
            validate_env_seconds=round(time.monotonic() - started, 2),
            validate_env_last=(validate.stdout.strip().splitlines() or [""])[-1][:300],
        )
        (self.out / "config-gunicorn.log").write_text(output)
        say(f"  misconfiguration: {self.facts()}")

    def phase_jwt(self, end: float) -> None:
        probe = self.buyers[0]
        old_access, old_refresh = probe.access, probe.refresh_token
        old_kid = token_kid(old_access)
        started = time.monotonic()
        self.mark("rotate_jwt_key")
        done = subprocess.run(
            [sys.executable, "manage.py", "rotate_jwt_key", "--reason", "bench drill"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.mark(f"rotate_jwt_key exited {done.returncode} after {time.monotonic() - started:.1f} s")
        time.sleep(3.0)  # every worker re-reads the ring within about a second
        statuses = []
        for _ in range(9):  # a fresh connection each: spread over the workers
            rec, _ = send(session(), self.recorder, "probe", "GET", f"{self.base}/api/cart/", token=old_access)
            statuses.append(rec.status)
        probe.access, probe.refresh_token = old_access, old_refresh
        refreshed = probe.refresh(kind="probe")
        new_kid = token_kid(probe.access) if refreshed else ""
        self.mark(f"pre-rotation token: {statuses.count(200)}/{len(statuses)} 200, refresh {refreshed}")
        self.facts().update(
            rotate_rc=done.returncode,
            rotate_out=(done.stdout + done.stderr).strip()[-400:],
            old_kid=old_kid,
            new_kid=new_kid,
            old_access_statuses=statuses,
            old_refresh_ok=refreshed,
        )

    def brute_force(self, victim: str) -> list[dict[str, Any]]:
        attempts = []
        for _ in range(BRUTE_ATTEMPTS):
            body = {"username": victim, "password": "wrong " + secrets.token_hex(4)}
            rec, _ = send(session(), self.recorder, "brute", "POST", f"{self.base}/api/auth/token/", json_body=body)
            attempts.append({"status": rec.status, "code": rec.code, "latency": round(rec.latency, 4)})
        return attempts

    def phase_redis(self, end: float) -> None:
        issued = self.recorder.now()
        self.stack.kill("redis")
        self.mark("redis killed", issued)
        time.sleep(3.0)
        victim = self.buyers[1].username
        attempts = self.brute_force(victim)
        statuses = [a["status"] for a in attempts]
        self.mark(f"brute force: {statuses.count(401)} x 401, {statuses.count(429)} x 429 of {len(attempts)}")
        self.facts().update(victim=victim, brute=attempts, limit=LOGIN_USER_LIMIT, workers=self.args.workers)
        self.hold_until(end - 12.0)
        self.stack.start("redis")
        self.mark("redis started")

    def order_ids_since(self, since: int) -> list[tuple[int, str]]:
        rows = self.db(f"SELECT id, status FROM shop_order WHERE id > {int(since)} ORDER BY id")  # noqa: S608
        return [(int(i), s) for i, s in (line.split("|") for line in rows.splitlines() if "|" in line)]

    def phase_payment(self, end: float) -> None:
        assert self.gateway is not None
        since = int(self.db("SELECT coalesce(max(id), 0) FROM shop_order") or 0)
        issued = self.recorder.now()
        self.gateway.set_mode("hang", hang_seconds=60)
        self.mark("gateway hangs", issued)
        self.hold_until(self.recorder.now() + 20.0)
        self.gateway.set_mode("succeed")
        self.mark("gateway back")
        out = subprocess.run(
            [sys.executable, "manage.py", "retry_payments"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        self.mark(f"retry_payments exited {out.returncode}: {out.stdout.strip().splitlines()[-1:]}")
        self.hold_until(end - 2.0)
        orders = self.order_ids_since(since)
        pending = [i for i, s in orders if s == "pending_payment"]
        if pending:  # ordered after retry_payments while the breaker was still open: the next retry pays them
            again = subprocess.run(
                [sys.executable, "manage.py", "retry_payments"], cwd=ROOT, env=self.env, capture_output=True, text=True
            )
            self.mark(f"{len(pending)} still pending; retry_payments again: {again.stdout.strip().splitlines()[-1:]}")
            orders = self.order_ids_since(since)
        refs: dict[str, int] = {}
        for charge in self.gateway.charges():
            if charge["status"] == "succeeded":
                refs[charge["reference"]] = refs.get(charge["reference"], 0) + 1
        self.facts().update(
            since_order_id=since,
            orders={str(i): s for i, s in orders},
            retry_payments=out.stdout.strip()[-400:],
            charged_twice=sorted(r for r, n in refs.items() if n > 1),
            charges=len(refs),
        )

    def phase_oversell(self, end: float) -> None:
        pid = self.race_product
        self.db(f"UPDATE shop_product SET stock = {RACE_STOCK} WHERE id = {pid}")  # noqa: S608
        for buyer in self.buyers:
            buyer.call("race", "POST", "/api/cart/items/", json_body={"product_id": pid, "quantity": 1})
        self.mark(f"{len(self.buyers)} carts hold product {pid} (stock {RACE_STOCK}); checkout at a barrier")
        barrier = threading.Barrier(len(self.buyers))
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def buy(buyer: Client) -> None:
            key = uuid.uuid4().hex
            barrier.wait(timeout=30)
            for _ in range(8):
                rec, _ = buyer.call("race", "POST", "/api/orders/", headers={"Idempotency-Key": key}, key=key)
                if rec.status not in (0, 429, 503):
                    break
                time.sleep(0.2)
            with lock:
                results.append({"user": buyer.username, "status": rec.status, "code": rec.code, "order": rec.order_id})

        threads = [threading.Thread(target=buy, args=(b,), daemon=True) for b in self.buyers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stock = int(self.db(f"SELECT stock FROM shop_product WHERE id = {pid}"))  # noqa: S608
        sold_sql = (
            "SELECT count(DISTINCT i.order_id), coalesce(sum(i.quantity), 0) FROM shop_orderitem i "
            "JOIN shop_order o ON o.id = i.order_id WHERE i.product_id = %d AND o.status <> 'cancelled'"
        )
        sold = self.db(sold_sql % pid).split("|")
        self.facts().update(
            product=pid,
            stock_before=RACE_STOCK,
            stock_after=stock,
            orders_in_db=int(sold[0]),
            quantity_sold=int(sold[1]),
            answers=results,
        )
        self.mark(f"race: {sum(r['status'] == 201 for r in results)} x 201, stock left {stock}, orders {sold[0]}")

    def phase_primary(self, end: float) -> None:
        issued = self.recorder.now()
        self.stack.kill("primary")
        self.mark("primary killed", issued)
        self.phase = "primary"  # psql goes to the replica from now on
        self.hold_until(self.recorder.now() + 20.0)
        self.mark("promote issued")
        self.stack.promote()
        self.mark("replica promoted")


# ----------------------------------------------------------------------------------------------------------
# Set-up and the whole run
# ----------------------------------------------------------------------------------------------------------


def wait_not_quiet(prefix: str = "") -> None:
    announced = False
    while QUIET_FILE.exists():
        if not announced:
            say(f"{prefix}{QUIET_FILE} exists (someone is measuring): waiting for it to go")
            announced = True
        time.sleep(5)


def app_env(stack_env: dict[str, str], port: int, gateway_url: str, workers: int) -> dict[str, str]:
    return server_env(
        SECRET_KEY=secrets.token_urlsafe(64),
        JWT_SECRET=secrets.token_urlsafe(48),
        DATABASE_URL=stack_env["DATABASE_URL_MULTIHOST"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        REDIS_URL=stack_env["REDIS_URL"],
        PAYMENT_GATEWAY_URL=gateway_url,
        DB_CONNECT_TIMEOUT="2",
        WEB_CONCURRENCY=str(workers),
        PORT=str(port),
        LOG_LEVEL="INFO",
        **RATE_LIMITS,
        **GATEWAY,
        **SERVING_OUT_OF_THE_WAY,
    )


def ports_busy(ports: list[int]) -> list[int]:
    from devstack.procs import port_in_use

    return [p for p in ports if port_in_use(p)]


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> None:
    run_started = time.monotonic()
    wait_not_quiet()
    busy = ports_busy([args.port_base + i for i in range(3, 6)])
    if busy:
        raise RuntimeError(f"ports {busy} are in use: choose another --port-base")
    code = announce_code()
    stack_env = fresh_stack(stack)
    gateway = FakeGateway(port=args.port_base + 5).start()
    cleanup.append(gateway.stop)
    env = app_env(stack_env, args.port_base + 3, gateway.url, args.workers)
    say("migrate + seed_demo")
    manage("migrate", "--noinput", env={**env, "DATABASE_URL": stack_env["DATABASE_URL"]})
    manage("seed_demo", "-v", "0", env={**env, "DATABASE_URL": stack_env["DATABASE_URL"]})
    stack.psql("primary", "UPDATE shop_product SET stock = 1000000")
    stack.wait_streaming()
    drill = Drill(args, stack, env, out)
    drill.gateway = gateway
    server = Gunicorn(env, out / "gunicorn.log")
    cleanup.append(server.stop)
    server.wait_ready()
    drill.server = server
    setup_started = time.monotonic()
    say(f"gunicorn up at {server.url} ({args.workers} workers); registering {args.clients} shoppers, {BUYERS} buyers")
    r = requests.get(f"{server.url}/api/products/", params={"page_size": 100}, timeout=30)
    r.raise_for_status()
    product_ids = [p["id"] for p in r.json()["results"]]
    drill.race_product, product_ids = product_ids[0], product_ids[1:]
    tag = secrets.token_hex(3)
    setup_rec = Recorder(time.monotonic())
    names = [f"drill-{tag}-s{i:02d}" for i in range(args.clients)] + [f"drill-{tag}-b{i:02d}" for i in range(BUYERS)]
    clients = [Client(server.url, name, PASSWORD, setup_rec) for name in names]

    def enrol(client: Client) -> None:
        register(server.url, setup_rec, client.username, PASSWORD)
        for _ in range(3):  # a busy machine: PBKDF2 on two cores can outlast a client timeout
            if client.login():
                return
            last = [r for r in setup_rec.snapshot() if r.user == client.username][-1]
            say(f"log-in of {client.username}: {last.status} {last.code or last.error} after {last.latency:.1f} s")
            time.sleep(1.0)

    threads = [threading.Thread(target=enrol, args=(c,), daemon=True) for c in clients]
    for i in range(0, len(threads), 6):  # six at a time: PBKDF2 on two cores
        for t in threads[i : i + 6]:
            t.start()
        for t in threads[i : i + 6]:
            t.join(120)
    missing = [c.username for c in clients if not c.access]
    if missing:
        raise RuntimeError(f"could not register and log in {missing}")
    say(f"accounts ready in {time.monotonic() - setup_started:.1f} s")
    drill.recorder = Recorder(time.monotonic())  # the drill's clock starts with the load
    for c in clients:
        c.recorder = drill.recorder
    drill.buyers = clients[args.clients :]
    shoppers = [
        Shopper(c, product_ids, interval=args.interval, seed=args.seed + i)
        for i, c in enumerate(clients[: args.clients])
    ]
    load = Load(shoppers)
    sampler = Sampler(server.url, drill.recorder)
    progress = Progress(drill)

    def stop_threads() -> None:
        progress.stop_event.set()
        sampler.stop_event.set()
        load.stop()

    cleanup.append(stop_threads)
    selected = [p for p in PHASES if not args.phases or p[0] in args.phases]
    load_before = load_average()
    say(f"load: {args.clients} shoppers, a step every {args.interval:g} s each; phases {[p[0] for p in selected]}")
    load.start()
    sampler.start()
    progress.start()
    try:
        for name, title, seconds in selected:
            drill.run_phase(name, title, seconds * args.scale)
    finally:
        drill.phase = "done"
        stop_threads()
        cleanup.remove(stop_threads)
    load_after = load_average()
    drill_seconds = drill.recorder.now()
    records = [asdict(r) for r in drill.recorder.snapshot()]
    for r in records:
        r["start"], r["latency"], r["wall"] = round(r["start"], 4), round(r["latency"], 5), round(r["wall"], 3)
    records.sort(key=lambda r: r["start"])
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sampler.samples))
    server.stop()
    cleanup.remove(server.stop)
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "settings": {
            "WEB_CONCURRENCY": args.workers,
            **RATE_LIMITS,
            **GATEWAY,
            **SERVING_OUT_OF_THE_WAY,
            "clients": args.clients,
            "interval": args.interval,
        },
        "phases": drill.phases,
        "log": report.scan_log(out / "gunicorn.log"),
        "loadavg": {"before": load_before, "after": load_after},
        "machine": machine_facts(),
        "git": code,
        "seconds": {"drill": round(drill_seconds), "run": round(time.monotonic() - run_started)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__.split("\n\n")[0])
    add_common_args(p, name="bench-drill", port_base=61600, prefix=PREFIX, docs_plot=DOCS_PLOT)
    p.add_argument("--workers", type=int, default=3, help="gunicorn workers (%(default)s)")
    p.add_argument("--clients", type=int, default=8, help="shoppers, one thread each (%(default)s)")
    p.add_argument("--interval", type=float, default=0.3, help="seconds between a shopper's steps (%(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every phase's length (%(default)s)")
    p.add_argument("--phases", nargs="*", choices=[p[0] for p in PHASES], help="only these phases, in order")
    p.add_argument("--seed", type=int, default=19, help="shoppers' choice seed (%(default)s)")
    return p.parse_args(argv)


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = {"out": None}

    def measured(a: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> None:
        result["out"] = out
        measure(a, stack, out, cleanup)

    rc = run_bench(args, PREFIX, measured, render)
    if rc:
        return rc
    out = args.report or result["out"]
    if out is None or not (Path(out) / "meta.json").exists():
        return 1
    failed = [c["name"] for c in report.criteria(report.load(Path(out))) if c["ran"] and not c["passed"] and c["gates"]]
    if failed:
        say(f"FAILED: {', '.join(failed)}")
        return 1
    return 0
