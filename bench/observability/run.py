"""Run the observability benchmark: request latency with a stalled log disk or a dead or hung trace collector.

The run

1. builds a fresh devstack stack (``bench-observability``, ports 61300-61302), migrates it, loads the demo
   catalog;
2. starts four gunicorn servers against it (2 workers x 4 threads each, like ``make run``), all with JSON logs
   at INFO (one ``request`` record per request) to standard output and ``LOG_DIR``, and traces exported to two
   OTLP/HTTP endpoints:

   - ``baseline``: a writable ``LOG_DIR``, two answering collectors;
   - ``stalled_log_sink``: nobody reads the server's standard output: once the pipe is full every write of the log
     listener blocks for good, as behind a stuck log shipper or on a hung disk (a disk itself cannot be stalled
     here without device-mapper privileges; the listener blocks in ``write`` the same way);
   - ``dead_collector``: one answering collector and one port where nothing listens;
   - ``hung_collector``: one answering collector and one that accepts connections and never answers;

3. for ``--rounds`` rounds, measures each server in turn (the order rotates per round, so drift on a shared
   machine spreads over the modes): ``--requests`` sequential ``GET /api/products/<id>/`` on a keep-alive
   connection after a short warm-up;
4. reads each server's ``/metrics`` (log records dropped, spans dropped and exporters up) as evidence that the
   fault really took hold, stops everything and takes the stack down.

Every request is recorded to ``bench/results/observability-<time>/requests.jsonl``; :mod:`bench.observability.report`
makes the table and the plot. Everything started here is stopped again on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
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
from bench.observability import report
from bench.observability.receivers import Collector, HungCollector, dead_url
from devstack import Stack

DOCS_PLOT = ROOT / "docs" / "bench" / "observability_faults.png"
MODES = ("baseline", "stalled_log_sink", "dead_collector", "hung_collector")
WORKERS = 2
CLIENT_TIMEOUT = 10.0
WARMUP = 20
EVIDENCE = re.compile(
    r"^(bulwark_log_records_dropped_total|bulwark_log_queue_depth|bulwark_spans_dropped_total"
    r"|bulwark_span_exporter_up)(\{[^}]*\})? (\S+)$",
    re.M,
)


@dataclass
class Record:
    round: int
    mode: str
    latency: float  # seconds, client side
    status: int


def app_env(stack_env: dict[str, str], port: int, log_dir: Path, endpoints: list[str]) -> dict[str, str]:
    env = server_env(
        SECRET_KEY=stack_env["_SECRET_KEY"],
        JWT_SECRET=stack_env["_JWT_SECRET"],
        DATABASE_URL=stack_env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        REDIS_URL=stack_env["REDIS_URL"],
        RATELIMIT_ENABLED="false",  # one client address: the limits would be the thing measured
        WEB_CONCURRENCY=str(WORKERS),
        PORT=str(port),
        LOG_LEVEL="INFO",  # one JSON `request` record per request goes through the queue to both sinks
        OTEL_EXPORTER_OTLP_ENDPOINTS=",".join(endpoints),
    )
    env["LOG_DIR"] = str(log_dir)  # server_env drops the shell's LOG_DIR; this one is the benchmark's
    return env


class Client:
    def __init__(self, base_url: str, product_ids: list[int], seed: int) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.rng = random.Random(seed)
        self.product_ids = product_ids

    def send(self) -> tuple[float, int]:
        path = f"/api/products/{self.rng.choice(self.product_ids)}/"
        started = time.perf_counter()
        response = self.session.get(
            self.base_url + path, headers={"Accept": "application/json"}, timeout=CLIENT_TIMEOUT
        )
        _ = response.content
        return time.perf_counter() - started, response.status_code


def evidence(url: str) -> dict[str, float]:
    """The fault's traces in ``/metrics``: records and spans dropped, exporters up (sums over the workers)."""
    text = requests.get(f"{url}/metrics", timeout=CLIENT_TIMEOUT).text
    found: dict[str, float] = {}
    for name, labels, value in EVIDENCE.findall(text):
        key = name + (labels or "")
        found[key] = found.get(key, 0.0) + float(value)
    return found


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    stack_env = fresh_stack(stack)
    stack_env["_SECRET_KEY"], stack_env["_JWT_SECRET"] = os.urandom(48).hex(), os.urandom(48).hex()
    healthy, second, hung = Collector(), Collector(), HungCollector()
    for collector in (healthy, second, hung):
        cleanup.append(collector.stop)
    endpoints = {
        "baseline": [healthy.url, second.url],
        "stalled_log_sink": [healthy.url, second.url],
        "dead_collector": [healthy.url, dead_url()],
        "hung_collector": [healthy.url, hung.url],
    }
    log_dirs = {mode: out / f"logs-{mode}" for mode in MODES}
    envs = {mode: app_env(stack_env, free_port(), log_dirs[mode], endpoints[mode]) for mode in MODES}
    say("migrate + seed_demo")
    manage("migrate", "--noinput", env=envs["baseline"])
    manage("seed_demo", "-v", "0", env=envs["baseline"])
    code = announce_code()
    servers = {
        mode: Gunicorn(envs[mode], out / f"gunicorn-{mode}.log", stdout_unread=mode == "stalled_log_sink")
        for mode in MODES
    }
    for server in servers.values():
        cleanup.append(server.stop)
    for server in servers.values():
        server.wait_ready()
    products = requests.get(f"{servers['baseline'].url}/api/products/", params={"page_size": 100}, timeout=30)
    products.raise_for_status()
    ids = [p["id"] for p in products.json()["results"]]
    clients = {mode: Client(server.url, ids, seed=args.seed) for mode, server in servers.items()}
    for client in clients.values():
        for _ in range(WARMUP):
            client.send()

    records: list[Record] = []
    load_before = load_average()
    for round_no in range(args.rounds):
        order = MODES[round_no % len(MODES) :] + MODES[: round_no % len(MODES)]
        for mode in order:
            client = clients[mode]
            for _ in range(WARMUP):
                client.send()
            for _ in range(args.requests):
                latency, status = client.send()
                records.append(Record(round_no, mode, latency, status))
        say(f"round {round_no + 1}/{args.rounds} measured ({args.requests} requests per mode)")
    load_after = load_average()
    time.sleep(3)  # one more export and log cycle before the evidence is read
    proof = {mode: evidence(server.url) for mode, server in servers.items()}
    exports = {"healthy": healthy.exports, "second": second.exports}
    for client in clients.values():
        client.session.close()
    for server in servers.values():
        server.stop()
        cleanup.remove(server.stop)
    stack.down()
    findings = {mode: report.scan_log(server.log_path) for mode, server in servers.items()}
    say(f"load average before {load_before}, after {load_after}; collector exports {exports}; logs {findings}")
    (out / "requests.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "command": command_line("bench.observability"),
        "workers": WORKERS,
        "endpoints": {mode: [u.replace("/v1/traces", "") for u in urls] for mode, urls in endpoints.items()},
        "evidence": proof,
        "collector_exports": exports,
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
    p = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__.split("\n\n")[0])
    add_common_args(p, name="bench-observability", port_base=61300, prefix="observability", docs_plot=DOCS_PLOT)
    p.add_argument("--rounds", type=int, default=5, help="rounds over the four modes (%(default)s)")
    p.add_argument("--requests", type=int, default=300, help="measured requests per mode and round (%(default)s)")
    p.add_argument("--seed", type=int, default=7, help="product choice seed (%(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "observability", measure, render)
