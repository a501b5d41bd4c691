"""Run the rate-limit cost benchmark: Redis mode vs memory-fallback mode (Redis killed) vs limits off.

The run

1. builds a fresh devstack stack (``bench-ratelimit``, ports 61100-61102), migrates it, loads the demo catalog;
2. starts two gunicorn servers against it (2 workers x 4 threads each, like ``make run``): one with rate
   limiting on (limits so high that nothing is refused: every request is counted, none is turned away), one
   with ``RATELIMIT_ENABLED=false``;
3. for ``--rounds`` rounds, measures each mode in turn (the order rotates per round, so drift on a shared
   machine spreads over the modes): ``redis`` (limits on, Redis up), ``memory`` (limits on, Redis killed
   with ``kill -9``; counting in each worker's memory) and ``off`` (the second server). Before a mode's
   measurement, warm-up requests run until the responses show that mode (``RateLimit-Limit`` is the full limit
   in Redis mode, the worker's share in memory mode, absent when off); then ``--requests`` sequential requests
   to each endpoint on a keep-alive connection;
4. stops both servers and takes the stack down.

Endpoints: ``GET /api/products/<id>/`` (one scope counted: ``api``) and ``POST /api/auth/token/refresh/`` with a
malformed token (answered 401 without touching the database; two scopes: ``api`` and ``refresh``). Each request
claims one of 1000 client addresses through ``X-Forwarded-For`` (the benchmark plays the one trusted proxy), so
counters are spread over many keys as with real clients.

Every request is recorded to ``bench/results/ratelimit-<time>/requests.jsonl``; :mod:`bench.ratelimit.report`
makes the table and the plot. Everything started here is stopped again on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    ROOT,
    Gunicorn,
    add_common_args,
    announce_code,
    args_meta,
    command_line,
    free_port,
    fresh_stack,
    load_average,
    manage,
    publish_run,
    run_bench,
    say,
    server_env,
)
from bench.ratelimit import report
from devstack import Stack

DOCS_PLOT = ROOT / "docs" / "bench" / "ratelimit_cost.png"
MODES = ("redis", "memory", "off")
WORKERS = 2
LIMIT = 1_000_000  # per minute: every request is counted, none refused
SHARE = -(-LIMIT // WORKERS)
CLIENT_TIMEOUT = 10.0
WARMUP_STREAK = 20  # consecutive responses showing the mode before it is measured
WARMUP_MAX = 400


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None
    expected_status: int


ENDPOINTS = (
    Endpoint("product", "GET", "/api/products/{id}/", None, 200),
    Endpoint("refresh", "POST", "/api/auth/token/refresh/", {"refresh": "not-a-token"}, 401),
)


@dataclass
class Record:
    round: int
    mode: str
    endpoint: str
    latency: float  # seconds, client side
    status: int
    observed: str  # the mode the response shows: redis | memory | off | ?


def app_env(stack_env: dict[str, str], port: int, limits: bool) -> dict[str, str]:
    """A server's environment (:func:`bench.harness.server_env`): limits on (counted, never refused) or off."""
    return server_env(
        SECRET_KEY=stack_env["_SECRET_KEY"],
        JWT_SECRET=stack_env["_JWT_SECRET"],
        DATABASE_URL=stack_env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        REDIS_URL=stack_env["REDIS_URL"],
        RATELIMIT_ENABLED="true" if limits else "false",
        RATELIMIT_API=f"{LIMIT}/m",
        RATELIMIT_REFRESH=f"{LIMIT}/m",
        TRUSTED_PROXY_COUNT="1",
        WEB_CONCURRENCY=str(WORKERS),
        PORT=str(port),
        LOG_LEVEL="WARNING",  # no per-request log lines in the measured path (gunicorn's access log stays)
    )


def observed_mode(response: requests.Response) -> str:
    limit = response.headers.get("RateLimit-Limit")
    if limit is None:
        return "off"
    return {str(LIMIT): "redis", str(SHARE): "memory"}.get(limit, "?")


class Client:
    """Sequential requests on one keep-alive connection, each from one of 1000 client addresses."""

    def __init__(self, base_url: str, product_ids: list[int], seed: int) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.rng = random.Random(seed)
        self.product_ids = product_ids
        self.addresses = [f"10.{n // 250}.{n % 250}.{1 + n % 200}" for n in range(1000)]

    def send(self, endpoint: Endpoint) -> tuple[float, requests.Response]:
        path = endpoint.path.format(id=self.rng.choice(self.product_ids))
        headers = {"X-Forwarded-For": self.rng.choice(self.addresses), "Accept": "application/json"}
        started = time.perf_counter()
        response = self.session.request(
            endpoint.method, self.base_url + path, json=endpoint.body, headers=headers, timeout=CLIENT_TIMEOUT
        )
        _ = response.content
        return time.perf_counter() - started, response

    def close(self) -> None:
        self.session.close()


def warm_up(client: Client, mode: str) -> int:
    """Send requests until ``WARMUP_STREAK`` in a row show ``mode``; returns how many it took."""
    streak = 0
    for sent in range(1, WARMUP_MAX + 1):
        _, response = client.send(ENDPOINTS[sent % len(ENDPOINTS)])
        if response.status_code >= 500:
            raise RuntimeError(f"warm-up for {mode}: {response.status_code} {response.text[:300]}")
        streak = streak + 1 if observed_mode(response) == mode else 0
        if streak >= WARMUP_STREAK:
            return sent
        if streak == 0:
            time.sleep(0.05)  # waiting for a circuit to open or a probe to close it
    raise RuntimeError(f"the server did not reach {mode} mode within {WARMUP_MAX} requests")


class RedisNode:
    """The stack's Redis, killed and started as the modes need."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.up = True

    def want(self, up: bool) -> None:
        if up and not self.up:
            self.stack.start("redis")
        elif not up and self.up:
            self.stack.kill("redis")
        self.up = up


def limiter_alone(env: dict[str, str], mode: str, calls: int) -> dict[str, list[float]]:
    """Time ``enforce`` in a process of its own (see :mod:`bench.ratelimit.inprocess`)."""
    out = Path(tempfile.mkdtemp(prefix="bench-ratelimit-")) / "inprocess.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ratelimit.inprocess", mode, str(calls), str(out)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "settings.base"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise RuntimeError(f"bench.ratelimit.inprocess {mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())["scopes"]
    shutil.rmtree(out.parent, ignore_errors=True)
    return result


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    stack_env = fresh_stack(stack)
    stack_env["_SECRET_KEY"], stack_env["_JWT_SECRET"] = os.urandom(48).hex(), os.urandom(48).hex()
    on_env = app_env(stack_env, free_port(), limits=True)
    off_env = app_env(stack_env, free_port(), limits=False)
    say("migrate + seed_demo")
    manage("migrate", "--noinput", env=on_env)
    manage("seed_demo", "-v", "0", env=on_env)
    code = announce_code()
    servers = {
        "on": Gunicorn(on_env, out / "gunicorn-limits-on.log"),
        "off": Gunicorn(off_env, out / "gunicorn-off.log"),
    }
    for server in servers.values():
        cleanup.append(server.stop)
    for server in servers.values():
        server.wait_ready()
    products = requests.get(f"{servers['on'].url}/api/products/", params={"page_size": 100}, timeout=CLIENT_TIMEOUT)
    products.raise_for_status()
    ids = [p["id"] for p in products.json()["results"]]
    clients = {name: Client(server.url, ids, seed=args.seed) for name, server in servers.items()}
    redis_node = RedisNode(stack)
    cleanup.append(lambda: redis_node.want(True))

    records: list[Record] = []
    warmups: list[dict[str, Any]] = []
    load_before = load_average()
    for round_no in range(args.rounds):
        order = MODES[round_no % len(MODES) :] + MODES[: round_no % len(MODES)]
        for mode in order:
            if mode != "off":
                redis_node.want(mode == "redis")
            client = clients["off" if mode == "off" else "on"]
            warmups.append({"round": round_no, "mode": mode, "requests": warm_up(client, mode)})
            for endpoint in ENDPOINTS:
                for _ in range(args.requests):
                    latency, response = client.send(endpoint)
                    records.append(
                        Record(round_no, mode, endpoint.name, latency, response.status_code, observed_mode(response))
                    )
            for scope_set, timings in limiter_alone(on_env, mode, args.calls).items():
                records.extend(Record(round_no, mode, f"enforce:{scope_set}", t, 0, mode) for t in timings)
            say(f"round {round_no + 1}/{args.rounds}: {mode} measured ({args.requests} requests per endpoint)")
    load_after = load_average()
    redis_node.want(True)
    for client in clients.values():
        client.close()
    for server in servers.values():
        server.stop()
        cleanup.remove(server.stop)
    stack.down()
    findings = {name: report.scan_log(server.log_path) for name, server in servers.items()}
    say(f"machine load average before {load_before}, after {load_after}; server logs: {findings}")
    (out / "requests.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "command": command_line("bench.ratelimit"),
        "workers": WORKERS,
        "limit_per_minute": LIMIT,
        "endpoints": [asdict(e) for e in ENDPOINTS],
        "warmups": warmups,
        "log_findings": findings,
        "loadavg": {"before": load_before, "after": load_after},
        "cpus": os.cpu_count(),
        "git": code,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds over the three modes (%(default)s)")
    p.add_argument("--requests", type=int, default=300, help="requests per endpoint per mode per round (%(default)s)")
    p.add_argument(
        "--calls", type=int, default=2000, help="in-process enforce() calls per mode per round (%(default)s)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of products and addresses (%(default)s)")
    add_common_args(p, name="bench-ratelimit", port_base=61100, prefix="ratelimit", docs_plot=DOCS_PLOT)
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 10 <= args.requests <= 5000 or not 10 <= args.calls <= 100_000:
        p.error("keep it bounded: 1-20 rounds, 10-5000 requests, 10-100000 calls")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "ratelimit", measure, render)
