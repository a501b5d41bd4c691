"""Run the failover benchmark: for each mode a fresh stack, gunicorn, users, then load under a fault schedule.

For each ``DB_FAILOVER_MODE`` (``resilient``, ``naive``) the run

1. builds a fresh devstack stack (``down`` + ``up``: every mode starts from the same state), migrates it and
   loads the demo catalog;
2. starts gunicorn (2 workers) against it and registers and logs in a few users over HTTP;
3. runs a paced, bounded mixed load from a few client threads (reads: product list and detail pages;
   writes: ``POST /api/cart/items/`` as a logged-in user) while the main thread applies the fault schedule
   (:func:`schedule`): kill / restart / hang / resume the replica, kill / restart the primary, and finally
   kill the primary and promote the replica;
4. stops gunicorn and takes the stack down.

A request belongs to the phase in which it was sent, except that one still in flight when a fault is applied
belongs to that fault's phase. A fault phase begins as its fault is applied; a recovery phase (node started,
resumed) once the node is back, so the seconds a restart takes count for the fault before it.

Every request is recorded (start time, phase, kind, status or exception, latency) to
``bench/results/<run-id>/requests.jsonl``; the per-phase table and the latency-over-time plot are made by
:mod:`bench.failover.report`. Everything started here is stopped again on success, error, Ctrl-C or SIGTERM.
Traffic goes to 127.0.0.1 only.

Both modes use the stack's multi-host ``DATABASE_URL`` (``primary,replica?target_session_attrs=read-write``):
the promotion phase needs it, and giving it to both modes keeps the router the only difference between them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from bench.failover import report
from devstack import DevstackError, Stack

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DOCS_PLOT = ROOT / "docs" / "bench" / "failover_latency.png"
MODES = ("resilient", "naive")
HOST = "127.0.0.1"
START_TIMEOUT = 45.0
CLIENT_TIMEOUT = 10.0  # a request without an answer by then counts as a timeout
MAX_REQUESTS_PER_MODE = 20_000  # a hard cap on top of the time bound
PASSWORD = "bench failover horse staple"  # noqa: S105 - throwaway users on a throwaway stack


@dataclass(frozen=True)
class Phase:
    """One step of the schedule: ``action`` runs at the phase's start, then the load runs for ``seconds``."""

    name: str
    title: str
    action: Callable[[Stack, Callable[[str], None]], None] | None
    seconds: float
    fault: bool = False  # a request in flight when this phase begins is counted in it


def _kill_primary_and_promote(stack: Stack, mark: Callable[[str], None], delay: float = 3.0) -> None:
    stack.kill("primary")
    mark("primary killed")
    time.sleep(delay)  # an operator or Patroni takes a moment to decide
    stack.promote()
    mark("replica promoted")


def _act(method: str, node: str, label: str) -> Callable[[Stack, Callable[[str], None]], None]:
    def action(stack: Stack, mark: Callable[[str], None]) -> None:
        getattr(stack, method)(node)
        mark(label)

    return action


def schedule(seconds: float, promote: bool = True) -> list[Phase]:
    """The fault schedule; ``seconds`` per phase (the promotion phase gets 1.4 times that)."""
    phases = [
        Phase("baseline", "baseline", None, seconds),
        Phase("replica_killed", "replica kill -9", _act("kill", "replica", "replica killed"), seconds, fault=True),
        Phase("replica_back", "replica restarted", _act("start", "replica", "replica started"), seconds),
        Phase("replica_hung", "replica SIGSTOP", _act("hang", "replica", "replica hung"), seconds, fault=True),
        Phase("replica_resumed", "replica SIGCONT", _act("resume", "replica", "replica resumed"), seconds),
        Phase("primary_killed", "primary kill -9", _act("kill", "primary", "primary killed"), seconds, fault=True),
        Phase("primary_back", "primary restarted", _act("start", "primary", "primary started"), seconds),
    ]
    if promote:
        phases.append(
            Phase(
                "promoted", "primary kill -9 + promote", _kill_primary_and_promote, round(seconds * 1.4, 1), fault=True
            )
        )
    return phases


# ----------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def app_env(stack_env: dict[str, str], mode: str, port: int) -> dict[str, str]:
    """The environment gunicorn and manage.py run with: only what this benchmark sets, plus PATH and the like."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "DB_", "REDIS_", "JWT_", "SECRET_KEY", "DJANGO_", "RATELIMIT", "OTEL_"))
    }
    env.update(
        DJANGO_ENV="development",
        DOTENV_FILE="none",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECRET_KEY=secrets.token_urlsafe(48),
        JWT_SECRET=secrets.token_urlsafe(48),
        DATABASE_URL=stack_env["DATABASE_URL_MULTIHOST"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        REDIS_URL=stack_env["REDIS_URL"],
        DB_CONNECT_TIMEOUT="2",
        DB_QUERY_TIMEOUT="5s",
        DB_FAILOVER_MODE=mode,
        RATELIMIT_ENABLED="false",  # the load comes from one IP; limits would measure the limiter
        WEB_CONCURRENCY="2",
        PORT=str(port),
        LOG_LEVEL="INFO",
    )
    env.pop("LOG_DIR", None)
    return env


def manage(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


class Gunicorn:
    """gunicorn serving Bulwark on a free loopback port, in its own session (so Ctrl-C reaches us only)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.url = f"http://{HOST}:{env['PORT']}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "settings.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


# ----------------------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------------------


@dataclass
class User:
    username: str
    token: str


@dataclass
class Record:
    mode: str
    t: float  # request start, seconds since the schedule started
    phase: str
    kind: str  # read | write
    endpoint: str  # list | detail | cart_add
    status: int | None
    outcome: str  # see report.outcome_of
    code: str  # the error envelope's code, or the exception's class name
    latency: float  # seconds
    stale: bool = False


@dataclass
class LoadState:
    mode: str
    base_url: str
    users: list[User]
    read_ids: list[int]
    write_ids: list[int]
    t0: float
    fault_phases: frozenset[str] = frozenset()
    phase: str = "warmup"
    stop: threading.Event = field(default_factory=threading.Event)
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> bool:
        with self.lock:
            self.records.append(record)
            return len(self.records) < MAX_REQUESTS_PER_MODE


def _classify(response: requests.Response) -> tuple[str, str]:
    if response.status_code < 400:
        return "ok", ""
    code = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        code = str(response.json()["error"]["code"])
    return report.outcome_of(response.status_code, code), code


def client_loop(load: LoadState, index: int, nthreads: int, interval: float, write_share: float, seed: int) -> None:
    """One client: a browser-like session (keeps the read-your-writes cookie), paced to one request per interval."""
    rng = random.Random(seed)
    session = requests.Session()
    next_at = time.monotonic() + rng.uniform(0, interval)
    mine = [u for i, u in enumerate(load.users) if i % nthreads == index] or load.users
    while not load.stop.is_set():
        now = time.monotonic()
        if next_at > now:
            if load.stop.wait(next_at - now):
                break
        next_at = max(next_at + interval, time.monotonic())  # no catch-up burst after a slow request
        roll = rng.random()
        headers = {"Accept": "application/json"}
        if roll < write_share:
            kind, endpoint, method = "write", "cart_add", "POST"
            user = rng.choice(mine)
            url = f"{load.base_url}/api/cart/items/"
            headers["Authorization"] = f"Bearer {user.token}"
            body: dict[str, Any] | None = {"product_id": rng.choice(load.write_ids), "quantity": 1}
        elif roll < write_share + (1 - write_share) / 2:
            kind, endpoint, method, body = "read", "list", "GET", None
            url = f"{load.base_url}/api/products/?page={rng.randint(1, 3)}"
        else:
            kind, endpoint, method, body = "read", "detail", "GET", None
            url = f"{load.base_url}/api/products/{rng.choice(load.read_ids)}/"
        phase = load.phase
        started = time.monotonic()
        status: int | None = None
        stale = False
        try:
            response = session.request(method, url, json=body, headers=headers, timeout=CLIENT_TIMEOUT)
            status = response.status_code
            outcome, code = _classify(response)
            stale = response.headers.get("X-Data-Stale") == "true"
        except requests.Timeout as exc:
            outcome, code = "timeout", type(exc).__name__
        except requests.RequestException as exc:
            outcome, code = "conn_error", type(exc).__name__
        latency = time.monotonic() - started
        if load.phase != phase and load.phase in load.fault_phases:
            phase = load.phase  # in flight when a fault struck: it counts for the fault, not the phase before
        record = Record(
            load.mode, round(started - load.t0, 4), phase, kind, endpoint, status, outcome, code, latency, stale
        )
        if not load.add(record):
            load.stop.set()
    session.close()


def register_users(base_url: str, count: int, tag: str) -> list[User]:
    users = []
    for i in range(count):
        name = f"bench-{tag}-{i}-{secrets.token_hex(3)}"
        r = requests.post(
            f"{base_url}/api/auth/register/",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            timeout=CLIENT_TIMEOUT,
        )
        if r.status_code != 201:
            raise RuntimeError(f"register {name}: {r.status_code} {r.text[:300]}")
        r = requests.post(
            f"{base_url}/api/auth/token/", json={"username": name, "password": PASSWORD}, timeout=CLIENT_TIMEOUT
        )
        if r.status_code != 200:
            raise RuntimeError(f"login {name}: {r.status_code} {r.text[:300]}")
        users.append(User(name, r.json()["access"]))
    return users


def product_ids(base_url: str) -> tuple[list[int], list[int]]:
    """All product ids (reads), and those with plenty of stock (cart adds never run into out_of_stock)."""
    r = requests.get(f"{base_url}/api/products/", params={"page_size": 100}, timeout=CLIENT_TIMEOUT)
    r.raise_for_status()
    products = r.json()["results"]
    if not products:
        raise RuntimeError("the demo catalog is empty")
    return [p["id"] for p in products], [p["id"] for p in products if p["stock"] >= 40] or [products[0]["id"]]


# ----------------------------------------------------------------------------------------------------------
# One mode
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    phases: list[dict[str, Any]]  # name, title, start, end (seconds since t0)
    events: list[dict[str, Any]]  # t, label
    records: list[Record]
    gunicorn_log: str
    log_findings: dict[str, int]
    git: dict[str, Any]  # the code gunicorn loaded (taken as it started)
    loadavg: dict[str, list[float]]  # the machine's 1/5/15-min load before and after the schedule


def say(msg: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def fresh_stack(stack: Stack) -> dict[str, str]:
    stack.down()
    return stack.up()


def run_mode(
    mode: str, stack: Stack, args: argparse.Namespace, out: Path, cleanup: list[Callable[[], None]]
) -> ModeResult:
    say(f"{mode}: building a fresh stack '{stack.name}' (port base {stack.port_base})")
    stack_env = fresh_stack(stack)
    env = app_env(stack_env, mode, free_port())
    migrate_env = {**env, "DATABASE_URL": stack_env["DATABASE_URL"]}
    say(f"{mode}: migrate + seed_demo")
    manage("migrate", "--noinput", env=migrate_env)
    manage("seed_demo", "-v", "0", env=migrate_env)
    stack.wait_streaming()
    log_path = out / f"gunicorn-{mode}.log"
    code = git_state()
    say(
        f"{mode}: measuring commit {code['commit'][:10]}"
        + (f" + uncommitted changes to {', '.join(code['changed_files'])}" if code["changed_files"] else "")
    )
    server = Gunicorn(env, log_path)
    cleanup.append(server.stop)
    server.wait_ready()
    say(f"{mode}: gunicorn up at {server.url} (DB_FAILOVER_MODE={mode}); registering {args.users} users")
    users = register_users(server.url, args.users, mode[:3])
    read_ids, write_ids = product_ids(server.url)

    phases = schedule(args.phase_seconds, promote=not args.no_promote)
    load = LoadState(mode, server.url, users, read_ids, write_ids, t0=time.monotonic() + args.warmup)
    load.fault_phases = frozenset(p.name for p in phases if p.fault)
    interval = args.threads / args.rate
    threads = [
        threading.Thread(
            target=client_loop,
            args=(load, i, args.threads, interval, args.write_share, args.seed * 100 + i),
            name=f"client-{i}",
            daemon=True,
        )
        for i in range(args.threads)
    ]
    events: list[dict[str, Any]] = []

    spans: list[dict[str, Any]] = []

    def switch(phase: Phase) -> None:
        """From now on requests count for ``phase``: once its fault (or recovery) has been applied."""
        t = round(time.monotonic() - load.t0, 3) if spans else 0.0
        if spans:
            spans[-1]["end"] = t
        spans.append({"name": phase.name, "title": phase.title, "start": t, "end": None, "fault": phase.fault})
        load.phase = phase.name

    def mark(label: str) -> None:
        t = round(time.monotonic() - load.t0, 3)
        events.append({"t": t, "label": label})
        if load.phase != current.name:
            switch(current)
        say(f"{mode}:   t={t:6.1f}s {label}")

    def stop_load() -> None:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)

    cleanup.append(stop_load)
    load_before = [round(x, 2) for x in os.getloadavg()]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, load.t0 - time.monotonic()))  # warm-up: connections opened, not reported
    end = 0.0
    for current in phases:
        if load.stop.is_set():
            say(f"{mode}: request cap reached; stopping early")
            break
        say(f"{mode}: phase {current.name} ({current.seconds:.0f} s)")
        end += current.seconds
        if current.action is None or current.fault:
            switch(current)  # a fault phase begins as the fault is applied; a recovery once the node is back
        if current.action is not None:
            try:
                current.action(stack, mark)
            except DevstackError as exc:
                mark(f"{current.name} action FAILED: {exc}")
        if load.phase != current.name:
            switch(current)  # an action that marked nothing
        time.sleep(max(0.0, load.t0 + end - time.monotonic()))
    if spans:
        spans[-1]["end"] = round(time.monotonic() - load.t0, 3)
    load.phase = "done"
    load_after = [round(x, 2) for x in os.getloadavg()]
    stop_load()
    cleanup.remove(stop_load)
    server.stop()
    cleanup.remove(server.stop)
    records = [r for r in load.records if r.phase not in ("warmup", "done")]
    findings = report.scan_log(log_path)
    say(f"{mode}: {len(records)} requests recorded; gunicorn log: {findings}")
    stack.down()
    loadavg = {"before": load_before, "after": load_after}
    say(f"{mode}: machine load average before {load_before}, after {load_after}")
    return ModeResult(mode, spans, events, records, str(log_path), findings, code, loadavg)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated DB_FAILOVER_MODE values (%(default)s)")
    p.add_argument("--phase-seconds", type=float, default=10.0, help="seconds per phase (%(default)s)")
    p.add_argument("--warmup", type=float, default=3.0, help="unreported warm-up seconds (%(default)s)")
    p.add_argument("--threads", type=int, default=6, help="client threads (%(default)s)")
    p.add_argument("--rate", type=float, default=40.0, help="target requests/s over all threads (%(default)s)")
    p.add_argument("--write-share", type=float, default=0.2, help="share of writes (%(default)s)")
    p.add_argument("--users", type=int, default=6, help="registered users (%(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the request mix (%(default)s)")
    p.add_argument("--no-promote", action="store_true", help="leave out the kill-primary-and-promote phase")
    p.add_argument("--name", default="bench-failover", help="devstack stack name (%(default)s)")
    p.add_argument("--port-base", type=int, default=61000, help="devstack port base (%(default)s)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/failover-<time>)")
    p.add_argument("--publish", action="store_true", help=f"also write the plot to {DOCS_PLOT.relative_to(ROOT)}")
    p.add_argument("--report", type=Path, metavar="DIR", help="only re-render the report of an earlier run's folder")
    args = p.parse_args(argv)
    if not 1 <= args.threads <= 32 or not 0 < args.rate <= 500 or not 1 <= args.phase_seconds <= 60:
        p.error("keep it bounded: 1-32 threads, rate 0-500/s, 1-60 s per phase")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        p.error(f"--modes takes {', '.join(MODES)}")
    args.modes = modes
    return args


def git_state() -> dict[str, Any]:
    """The commit measured, and whether (and how) the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    diff = git("diff", "HEAD", "--", "resilience", "shop", "settings")
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "changed_files": git("diff", "HEAD", "--name-only", "--", "resilience", "shop", "settings").split(),
        "diff_sha1": hashlib.sha1(diff.encode(), usedforsecurity=False).hexdigest() if diff else "",
    }


def save(out: Path, results: list[ModeResult], args: argparse.Namespace) -> None:
    with (out / "requests.jsonl").open("w") as f:
        for result in results:
            for record in result.records:
                f.write(json.dumps(asdict(record)) + "\n")
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "client_timeout": CLIENT_TIMEOUT,
        "cpus": os.cpu_count(),
        "modes": {
            r.mode: {
                "phases": r.phases,
                "events": r.events,
                "log_findings": r.log_findings,
                "loadavg": r.loadavg,
                "git": r.git,
            }
            for r in results
        },
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def publish_report(
    out: Path, text: str, markdown: str, plot: Callable[[Path], Path], docs_plot: Path, publish: bool
) -> None:
    """Write the tables next to the raw results, draw the plot, and with ``publish`` copy it under docs/."""
    (out / "report.txt").write_text(text + "\n")
    (out / "report.md").write_text(markdown + "\n")
    print(text)
    try:
        png = plot(out / docs_plot.name)
    except ImportError:
        say("matplotlib is not installed (pip install -r requirements-dev.txt): no plot")
        return
    say(f"plot: {png}")
    if publish:
        docs_plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, docs_plot)
        say(f"plot published to {docs_plot.relative_to(ROOT)}")
    say(f"tables: {out / 'report.txt'} and {out / 'report.md'}")


def render(out: Path, publish: bool) -> None:
    runs = report.load(out)
    publish_report(
        out,
        report.text_table(runs),
        report.markdown_table(runs),
        lambda png: report.plot(runs, png),
        DOCS_PLOT,
        publish,
    )


def teardown(cleanup: list[Callable[[], None]], stack: Stack) -> None:
    """Undo every step and take the stack down; a second Ctrl-C cannot interrupt it (each step is time-bounded)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up whatever failed
                say(f"cleanup step failed: {exc}")
        try:
            stack.down()
        except DevstackError as exc:
            say(f"could not take the stack down: {exc}; run `python -m devstack --name {stack.name} down`")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bench(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[argparse.Namespace, Stack, Path, list[Callable[[], None]]], None],
    render_run: Callable[[Path, bool], None],
) -> int:
    """A benchmark's main: ``--report`` re-renders; otherwise measure on its own stack, always torn down."""
    if args.report:
        render_run(args.report, args.publish)
        return 0
    out = args.out or RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(name=args.name, port_base=args.port_base, echo=lambda m: say(f"devstack: {m}"))
    cleanup: list[Callable[[], None]] = []
    started = time.monotonic()
    interrupted = False
    try:
        with sigterm_as_interrupt():
            measure(args, stack, out, cleanup)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        interrupted = True
    finally:
        teardown(cleanup, stack)
    if interrupted:
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; raw results in {out}")
    render_run(out, args.publish)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        render(args.report, args.publish)
        return 0
    out = args.out or RESULTS / f"failover-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(name=args.name, port_base=args.port_base, echo=lambda m: say(f"devstack: {m}"))
    cleanup: list[Callable[[], None]] = []
    results: list[ModeResult] = []
    started = time.monotonic()
    interrupted = False
    try:
        with sigterm_as_interrupt():
            for mode in args.modes:
                results.append(run_mode(mode, stack, args, out, cleanup))
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        interrupted = True
    finally:
        teardown(cleanup, stack)
        if results:
            save(out, results, args)
    if interrupted:
        if results:
            say(f"partial results (complete modes only) in {out}; `--report {out}` renders them")
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; raw results in {out}")
    render(out, args.publish)
    return 0
