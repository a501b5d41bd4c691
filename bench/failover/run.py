"""Run the failover benchmark: for each mode a fresh stack, gunicorn, users, then load under a fault schedule.

For each ``DB_FAILOVER_MODE`` (``resilient``, ``naive``) the run

1. builds a fresh devstack stack (``down`` + ``up``: every mode starts from the same state), migrates it and
   loads the demo catalog;
2. starts gunicorn (2 workers) against it and registers and logs in a few users over HTTP;
3. runs a paced, bounded mixed load from a few client threads (reads: product list and detail pages;
   writes: ``POST /api/cart/items/`` as a logged-in user) while the main thread applies the fault schedule
   (:func:`schedule`): kill / restart / hang / resume the replica, slow the replica (``devstack slow``: its
   processes SIGSTOPped for ``--slow-duty`` of every ``--slow-period``, a CPU-starved node that answers
   slowly) and end that, hang / resume the primary (the replica stays up), kill / restart the primary, and
   finally kill the primary and promote the replica;
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
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.failover import report
from bench.harness import (
    ROOT,
    Gunicorn,
    add_common_args,
    announce_code,
    args_meta,
    bench_stack,
    command_line,
    free_port,
    fresh_stack,
    load_average,
    manage,
    publish_run,
    results_dir,
    say,
    server_env,
    sigterm_as_interrupt,
    teardown,
)
from devstack import DevstackError, Stack

DOCS_PLOT = ROOT / "docs" / "bench" / "failover_latency.png"
MODES = ("resilient", "naive")
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


def _slow(node: str, duty: float, period: float, label: str) -> Callable[[Stack, Callable[[str], None]], None]:
    def action(stack: Stack, mark: Callable[[str], None]) -> None:
        stack.slow(node, duty, period)
        mark(label)

    return action


def schedule(seconds: float, promote: bool = True, slow_duty: float = 0.8, slow_period: float = 0.1) -> list[Phase]:
    """The fault schedule; ``seconds`` per phase (the promotion phase gets 1.4 times that).

    The replica is slowed (``slow_duty`` of every ``slow_period`` seconds stopped) after its hang, and the
    primary hung (the replica up) before it is killed.
    """
    slowed = _slow("replica", slow_duty, slow_period, "replica slowed")
    phases = [
        Phase("baseline", "baseline", None, seconds),
        Phase("replica_killed", "replica kill -9", _act("kill", "replica", "replica killed"), seconds, fault=True),
        Phase("replica_back", "replica restarted", _act("start", "replica", "replica started"), seconds),
        Phase("replica_hung", "replica SIGSTOP", _act("hang", "replica", "replica hung"), seconds, fault=True),
        Phase("replica_resumed", "replica SIGCONT", _act("resume", "replica", "replica resumed"), seconds),
        Phase("replica_slow", f"replica slow ({slow_duty:.0%} stopped)", slowed, seconds, fault=True),
        Phase("replica_unslowed", "replica full speed", _act("resume", "replica", "replica full speed"), seconds),
        Phase("primary_hung", "primary SIGSTOP", _act("hang", "primary", "primary hung"), seconds, fault=True),
        Phase("primary_resumed", "primary SIGCONT", _act("resume", "primary", "primary resumed"), seconds),
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


def app_env(stack_env: dict[str, str], mode: str, port: int) -> dict[str, str]:
    """The environment gunicorn and manage.py run with (:func:`bench.harness.server_env`) for ``mode``."""
    return server_env(
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


def run_mode(
    mode: str, stack: Stack, args: argparse.Namespace, out: Path, cleanup: list[Callable[[], None]]
) -> ModeResult:
    stack_env = fresh_stack(stack, f"{mode}: ")
    env = app_env(stack_env, mode, free_port())
    migrate_env = {**env, "DATABASE_URL": stack_env["DATABASE_URL"]}
    say(f"{mode}: migrate + seed_demo")
    manage("migrate", "--noinput", env=migrate_env)
    manage("seed_demo", "-v", "0", env=migrate_env)
    stack.wait_streaming()
    log_path = out / f"gunicorn-{mode}.log"
    code = announce_code(f"{mode}: ")
    server = Gunicorn(env, log_path)
    cleanup.append(server.stop)
    server.wait_ready()
    say(f"{mode}: gunicorn up at {server.url} (DB_FAILOVER_MODE={mode}); registering {args.users} users")
    users = register_users(server.url, args.users, mode[:3])
    read_ids, write_ids = product_ids(server.url)

    phases = schedule(args.phase_seconds, not args.no_promote, args.slow_duty, args.slow_period)
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
    load_before = load_average()
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
    load_after = load_average()
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
    p.add_argument(
        "--slow-duty", type=float, default=0.8, help="share of each cycle the slowed replica is stopped (%(default)s)"
    )
    p.add_argument("--slow-period", type=float, default=0.1, help="seconds per stop/continue cycle (%(default)s)")
    add_common_args(p, name="bench-failover", port_base=61000, prefix="failover", docs_plot=DOCS_PLOT)
    args = p.parse_args(argv)
    if not 1 <= args.threads <= 32 or not 0 < args.rate <= 500 or not 1 <= args.phase_seconds <= 60:
        p.error("keep it bounded: 1-32 threads, rate 0-500/s, 1-60 s per phase")
    if not 0 < args.slow_duty < 1 or not 0.01 <= args.slow_period <= 10:
        p.error("--slow-duty takes 0-1 (exclusive), --slow-period 0.01-10 s")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        p.error(f"--modes takes {', '.join(MODES)}")
    args.modes = modes
    return args


def save(out: Path, results: list[ModeResult], args: argparse.Namespace) -> None:
    with (out / "requests.jsonl").open("w") as f:
        for result in results:
            for record in result.records:
                f.write(json.dumps(asdict(record)) + "\n")
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "command": command_line("bench.failover"),
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


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def main(argv: list[str] | None = None) -> int:
    """:func:`bench.harness.run_bench`, per mode: the modes done before an interrupt are saved (``--report``)."""
    args = parse_args(argv)
    if args.report:
        render(args.report, args.publish)
        return 0
    out = results_dir(args, "failover")
    stack = bench_stack(args)
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
