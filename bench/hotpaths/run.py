"""Run the hot-path benchmark: what the resilience layer costs the product list, a product, a log-in, a cart read
and a checkout, against the same app with the layer off, side by side in one run.

The run

1. builds a fresh devstack stack (``bench-hotpaths``, ports 61500-61502), migrates it, loads the demo catalog,
   gives every product a stock no run can exhaust, and creates the accounts in one go (one real PBKDF2 hash for
   all): the log-in account, the cart readers (3 items in each cart) and the shoppers; their access tokens are
   minted in a ``manage.py shell`` with the servers' keys;
2. starts three gunicorn servers against it, 2 workers x 4 threads each, the same environment but for:

   - ``off``: ``DJANGO_SETTINGS_MODULE=settings.baseline``, ``gunicorn settings.baseline_wsgi``: no routing
     middleware, router, replicas, monitor, node-aware engine, throttles or serving layer (``settings/baseline.py``);
   - ``on-nolimits``: ``settings.base`` and ``settings.wsgi`` (the whole layer) with ``RATELIMIT_ENABLED=false``;
   - ``on``: the whole layer with the rate limits counting in Redis, every scope at 1,000,000/m (counted, never
     refused);

   with the serving limits out of the way (each class 3 of the 4 threads, 60 s budgets: nothing is shed, which is
   checked) and no ``PAYMENT_GATEWAY_URL`` (checkout calls no gateway: orders stay pending_payment). Each server
   gets its own Redis database;
3. pins the servers to ``--server-cpus`` (``taskset``) and this process, the client, to ``--client-cpus``; the
   stack is left where the kernel puts it;
4. for ``--rounds`` rounds, for each path, measures the three servers one after the other (the order rotates per
   round): a *block* of ``--requests`` operations (``--checkouts`` for checkout, ``--logins`` for the log-in, whose
   PBKDF2 costs ~0.3 s of CPU each) over ``--concurrency`` keep-alive connections in a closed loop, after
   ``--warmup`` unmeasured operations per connection; around each block the workers' CPU (every thread's
   ``schedstat``: exact), the stack's and the client's are read from ``/proc``, and the server's Redis round
   trips by purpose from its ``/metrics`` (:mod:`bench.hotpaths.redis_trips`); every ``--idle-every`` rounds each
   server is also left without traffic for ``--idle-seconds`` and its workers' CPU per second read: the fixed
   cost of the layer's background threads, which a request-rate-bound ratio charges to the requests;
5. where a target is missed (:mod:`bench.hotpaths.report`), profiles that path on the ``off`` and the missing
   server with py-spy (``--profile``), so the report can say where the layer's time goes;
6. counts each server's system calls and context switches per operation of each path (``perf stat``, one block
   each, :mod:`bench.hotpaths.syscalls`) and with no traffic;
7. stops the servers and runs each again, alone, under callgrind (:mod:`bench.hotpaths.instructions`, one worker,
   ``--instructions`` operations per block, ``--instruction-repeats`` blocks per path): the instructions per
   request, which no other load on the machine can move;
8. stops everything and takes the stack down.

Every operation is recorded to ``bench/results/hotpaths-<time>/requests.jsonl``, every block to ``meta.json``;
:mod:`bench.hotpaths.report` makes the tables, the plot and the section of ``docs/benchmarks.md``. Everything
started here is stopped again on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
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
from bench.hotpaths import instructions, profile, redis_trips, report, syscalls
from bench.hotpaths.load import (
    PATHS,
    Accounts,
    Plan,
    block_run,
    children_of,
    cpu_between,
    cpu_read,
    idle_cpu,
    machine_busy,
)
from bench.serving.load import stack_pids
from bench.serving.run import machine_facts
from devstack import Stack

DOCS_PLOT = ROOT / "docs" / "bench" / "hotpaths.png"
CONFIGS = ("off", "on-nolimits", "on")
SETTINGS = {
    "off": ("settings.baseline", "settings.baseline_wsgi"),
    "on-nolimits": ("settings.base", "settings.wsgi"),
    "on": ("settings.base", "settings.wsgi"),
}
REDIS_DB = {"off": 0, "on-nolimits": 1, "on": 2}
WORKERS = 2
THREADS = 4
LIMIT = 1_000_000  # per minute: every request counted, none refused
RATE_SCOPES = ("API", "LOGIN", "LOGIN_USER", "REGISTER", "REFRESH", "CHECKOUT")
PASSWORD = "bench hotpaths correct horse"  # noqa: S105 - throwaway accounts on a throwaway stack
LOGIN = "bench-login"
READER_ITEMS = 3
TIMEOUT = 30.0


def app_env(stack_env: dict[str, str], port: int, config: str) -> dict[str, str]:
    module, _ = SETTINGS[config]
    limits = config == "on"
    return server_env(
        SECRET_KEY=stack_env["_SECRET_KEY"],
        JWT_SECRET=stack_env["_JWT_SECRET"],
        DATABASE_URL=stack_env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],  # the baseline settings drop it
        REDIS_URL=re.sub(r"/\d+$", f"/{REDIS_DB[config]}", stack_env["REDIS_URL"]),
        DJANGO_SETTINGS_MODULE=module,
        RATELIMIT_ENABLED="true" if limits else "false",
        **({f"RATELIMIT_{scope}": f"{LIMIT}/m" for scope in RATE_SCOPES} if limits else {}),
        WEB_CONCURRENCY=str(WORKERS),
        WEB_THREADS=str(THREADS),
        # Out of the way: each class may take every thread but the one kept for ops; nothing times out.
        **{f"SERVING_LIMIT_{c}": str(THREADS - 1) for c in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN")},
        SERVING_LIMIT_OPS=str(THREADS),
        **{f"SERVING_BUDGET_{c}": "60s" for c in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN", "OPS")},
        JWT_EXPIRES_IN="6h",  # the tokens are minted once, for the whole run
        PORT=str(port),
    )


class Server(Gunicorn):
    """:class:`bench.harness.Gunicorn` serving ``app`` (a WSGI module), pinned to ``cpus`` with ``taskset``."""

    def __init__(self, env: dict[str, str], log_path: Path, app: str, cpus: str) -> None:
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "gunicorn", app]
        if cpus and shutil.which("taskset"):
            command = ["taskset", "-c", cpus, *command]  # taskset execs: the pid is gunicorn's master
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )


ACCOUNTS_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from resilience.auth.tokens import tokens_for_user
User = get_user_model()
password = make_password({password!r})
names = [{login!r}] + ["bench-reader-%04d" % i for i in range({readers})]
names += ["bench-shopper-%04d" % i for i in range({shoppers})]
User.objects.bulk_create([User(username=n, email=n + "@bench.invalid", password=password) for n in names])
def tokens(prefix):
    users = User.objects.using("default").filter(username__startswith=prefix).order_by("username")
    return [tokens_for_user(u)["access"] for u in users]
with open({path!r}, "w") as out:
    json.dump({{"readers": tokens("bench-reader-"), "shoppers": tokens("bench-shopper-")}}, out)
"""


def accounts_create(env: dict[str, str], out: Path, readers: int, shoppers: int) -> dict[str, list[str]]:
    path = out / "tokens.json"
    script = ACCOUNTS_SCRIPT.format(password=PASSWORD, login=LOGIN, readers=readers, shoppers=shoppers, path=str(path))
    manage("shell", "-c", script, env=env)
    tokens = json.loads(path.read_text())
    path.unlink()  # credentials: not kept with the results
    return tokens


def stock_unlimited(primary_url: str) -> None:
    with psycopg.connect(primary_url, autocommit=True) as conn:
        conn.execute("UPDATE shop_product SET stock = 100000000")


def carts_fill(url: str, readers: list[str], product_ids: list[int]) -> None:
    with requests.Session() as session:
        for i, token in enumerate(readers):
            for j in range(READER_ITEMS):
                response = session.post(
                    f"{url}/api/cart/items/",
                    json={"product_id": product_ids[(i * READER_ITEMS + j) % len(product_ids)], "quantity": 1},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=TIMEOUT,
                )
                if response.status_code != 201:
                    raise RuntimeError(f"filling a reader's cart failed: {response.status_code} {response.text[:200]}")


def evidence(url: str, product_id: int) -> dict[str, Any]:
    """Headers that show which layer answered: rate-limit headers only where limits count."""
    response = requests.get(f"{url}/api/products/{product_id}/", timeout=TIMEOUT)
    response.raise_for_status()
    return {
        "status": response.status_code,
        "ratelimit_headers": sorted(h for h in response.headers if h.lower().startswith("ratelimit")),
    }


def cpus_arg(value: str) -> set[int]:
    found: set[int] = set()
    for part in value.split(","):
        if "-" in part:
            low, high = part.split("-")
            found.update(range(int(low), int(high) + 1))
        elif part:
            found.add(int(part))
    return found


class BlockMeter:
    """The readings around a block's measured part (after its warm-up): the CPU meters, and the server's Redis round
    trips (``/metrics``) read before the CPU at the start and after it at the end, so the scrapes' own work stays
    out of the block's CPU."""

    def __init__(self, url: str, cpu: Callable[[], dict[str, Any]]) -> None:
        self.url, self.cpu, self.readings = url, cpu, 0

    def __call__(self) -> dict[str, Any]:
        self.readings += 1
        if self.readings == 1:
            trips = redis_trips.scrape(self.url)
            return {**self.cpu(), "redis_trips": trips}
        reading = self.cpu()
        return {**reading, "redis_trips": redis_trips.scrape(self.url)}


class Blocks:
    """The measured blocks, in the order they ran, and every operation's sample."""

    def __init__(self, args: argparse.Namespace, servers: dict[str, Server], pids: dict[str, int], stack: list[int]):
        self.args = args
        self.servers = servers
        self.pids = pids
        self.stack = stack
        self.records: list[dict[str, Any]] = []
        self.blocks: list[dict[str, Any]] = []
        self.epoch = time.monotonic()

    def count(self, path: str) -> int:
        return {"token": self.args.logins, "checkout": self.args.checkouts}.get(path, self.args.requests)

    def run(self, round_no: int, config: str, path: str, accounts: Accounts) -> None:
        args = self.args
        port = int(self.servers[config].url.rsplit(":", 1)[1])
        plan = Plan(path, accounts, args.concurrency)
        warmup = 1 if path == "token" else args.warmup
        began = time.monotonic() - self.epoch
        samples, before, after, warm_failed = block_run(
            plan,
            port,
            self.count(path),
            warmup=warmup,
            timeout=TIMEOUT,
            meter=BlockMeter(self.servers[config].url, lambda: cpu_read(self.pids, self.stack)),
        )
        trips = redis_trips.per_operation(before["redis_trips"], after["redis_trips"], len(samples))
        cpu = cpu_between(before, after, config)
        statuses: dict[str, int] = {}
        for s in samples:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
            row: dict[str, Any] = {
                "round": round_no,
                "config": config,
                "path": path,
                "latency": round(s.latency, 6),
                "status": s.status,
            }
            if s.parts:
                row["parts"] = [round(p, 6) for p in s.parts]
            if s.error:
                row["error"] = s.error
            self.records.append(row)
        n = len(samples)
        info = {
            "round": round_no,
            "config": config,
            "path": path,
            "operations": n,
            "requests_per_operation": 2 if path == "checkout" else 1,
            "concurrency": args.concurrency,
            "warmup": warmup,
            "warmup_failed": warm_failed,
            "statuses": statuses,
            "started": round(began, 3),
            "wall": round(cpu["wall"], 4),
            "cpu": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cpu.items()},
            "redis_trips": trips,
        }
        self.blocks.append(info)
        bad = n - sum(1 for s in samples if plan.expected(s.status))
        say(
            f"round {round_no + 1} {path:<8} {config:<11}: {n} in {cpu['wall']:.1f} s "
            f"({n / max(cpu['wall'], 1e-9):.0f}/s), app CPU {cpu['workers'] / max(n, 1) * 1000:.2f} ms/op, "
            f"client {cpu['client'] / max(n, 1) * 1000:.2f} ms/op, Redis {redis_trips.total(trips):.2f} round trips/op"
            + (f"; {bad} unexpected answers {statuses}" if bad else "")
            + ("; a worker came or went" if cpu["workers_changed"] else "")
        )


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    run_started = time.monotonic()
    paths = args.paths
    stack_env = fresh_stack(stack)
    stack_env["_SECRET_KEY"], stack_env["_JWT_SECRET"] = os.urandom(48).hex(), os.urandom(48).hex()
    ports = {config: free_port() for config in CONFIGS}
    envs = {config: app_env(stack_env, ports[config], config) for config in CONFIGS}
    say("migrate + seed_demo + accounts")
    manage("migrate", "--noinput", env=envs["on"])
    manage("seed_demo", "-v", "0", env=envs["on"])
    stock_unlimited(stack_env["DATABASE_URL"])
    shoppers = args.concurrency * args.shoppers_per_connection
    tokens = accounts_create(envs["on"], out, args.readers, shoppers)
    code = announce_code()
    client_cpus = cpus_arg(args.client_cpus) if args.client_cpus else set()
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)  # this process and the client threads it starts
    servers = {
        config: Server(envs[config], out / f"gunicorn-{config}.log", SETTINGS[config][1], args.server_cpus)
        for config in CONFIGS
    }
    for server in servers.values():
        cleanup.append(server.stop)
    for server in servers.values():
        server.wait_ready()
    products = requests.get(f"{servers['off'].url}/api/products/", params={"page_size": 100}, timeout=TIMEOUT)
    products.raise_for_status()
    product_ids = [p["id"] for p in products.json()["results"]]
    carts_fill(servers["off"].url, tokens["readers"], product_ids)
    accounts = Accounts(product_ids, (LOGIN, PASSWORD), tokens["readers"], tokens["shoppers"])
    seen = {config: evidence(server.url, product_ids[0]) for config, server in servers.items()}
    say(f"rate-limit headers: { {c: e['ratelimit_headers'] for c, e in seen.items()} }")
    pids = {config: server.process.pid for config, server in servers.items()}
    stack_family = stack_pids(stack.name, int(stack_env["DEVSTACK_REDIS_PORT"]))
    blocks = Blocks(args, servers, pids, stack_family)
    affinity = {config: sorted(os.sched_getaffinity(pid)) for config, pid in pids.items()}
    say(f"servers on cpus {affinity['off']}, client on {sorted(os.sched_getaffinity(0))}; stack unpinned")
    for config in CONFIGS:  # first requests of every kind (imports, connections, key ring) outside any block
        for path in paths:
            plan = Plan(path, accounts, args.concurrency)
            block_run(plan, ports[config], 2 if path == "token" else 20, warmup=1, timeout=TIMEOUT, meter=dict)
    load_before = load_average()
    machine_before = machine_busy()
    measured_started = time.monotonic()
    idle: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        order = CONFIGS[round_no % len(CONFIGS) :] + CONFIGS[: round_no % len(CONFIGS)]
        for config in order:
            # No traffic: what the workers' background threads cost per second.
            if args.idle_seconds > 0 and round_no % max(1, args.idle_every) == 0:
                idle.append({"round": round_no, "config": config, **idle_cpu(pids[config], args.idle_seconds)})
                say(f"round {round_no + 1} idle     {config:<11}: workers {idle[-1]['cpu_ms_per_s']:.1f} ms CPU/s")
        for path in paths:
            for config in order:
                blocks.run(round_no, config, path, accounts)
    measured_seconds = time.monotonic() - measured_started
    machine_after = machine_busy()
    load_after = load_average()
    meta: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line("bench.hotpaths"),
        "args": args_meta(args),
        "configs": {c: {"settings": SETTINGS[c][0], "wsgi": SETTINGS[c][1]} for c in CONFIGS},
        "settings": {
            c: {k: v for k, v in envs[c].items() if k.startswith(("WEB_", "SERVING_", "RATELIMIT", "DJANGO_S"))}
            for c in CONFIGS
        },
        "paths": list(paths),
        "evidence": seen,
        "affinity": {"servers": affinity, "client": sorted(os.sched_getaffinity(0)), "stack": "unpinned"},
        "blocks": blocks.blocks,
        "idle": idle,
        "loadavg": {"before": load_before, "after": load_after},
        # Cores busy on the whole machine while measuring (2.0 = both): what else ran shows here.
        "machine_cores_busy": round((machine_after - machine_before) / measured_seconds, 3),
        "git": code,
        "seconds": {"measured": round(measured_seconds)},
    }
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in blocks.records))
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    run = report.load(out)
    missed = report.missed(run)
    if args.profile == "always":
        missed = sorted({(p, "on") for p in paths} | set(missed))
    if missed and args.profile != "never":
        meta["profiles"] = profile.profile_paths(
            missed, pids, args.profile_seconds, out, lambda path, n: blocks_drive(path, n, ports, accounts, args)
        )
    if args.syscalls:
        say("system calls and context switches per operation (perf stat)")
        meta["syscalls"] = syscalls.measure(
            {c: [pid for pid, parent in children_of({pids[c]}).items() if parent == pids[c]] for c in CONFIGS},
            [p for p in paths if p != "token"],
            lambda config, path: len(
                block_run(
                    Plan(path, accounts, args.concurrency),
                    ports[config],
                    blocks.count(path),
                    warmup=0,
                    timeout=TIMEOUT,
                    meter=dict,
                )[0]
            ),
            idle_seconds=max(args.idle_seconds, 2.0),
        )
        if "skipped" in meta["syscalls"]:
            say(f"system calls: skipped, {meta['syscalls']['skipped']}")
    for server in servers.values():
        server.stop()
        cleanup.remove(server.stop)
    if args.instructions > 0:
        meta["instructions"] = instructions.measure(
            envs,
            {config: SETTINGS[config][1] for config in CONFIGS},
            accounts,
            out,
            cleanup,
            paths=[p for p in instructions.PATHS if p in paths],
            operations=args.instructions,
            repeats=args.instruction_repeats,
            idle_seconds=args.instruction_idle_seconds,
            cpus=args.server_cpus,
        )
    meta["machine"] = machine_facts(stack_env["DATABASE_URL"])
    stack.down()
    meta["log_findings"] = {config: report.scan_log(server.log_path) for config, server in servers.items()}
    meta["seconds"]["run"] = round(time.monotonic() - run_started)
    say(f"load average before {load_before}, after {load_after}; logs {meta['log_findings']}")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def blocks_drive(
    path: str, seconds: float, ports: dict[str, int], accounts: Accounts, args: argparse.Namespace
) -> Callable[[str], int]:
    """The profiler's load: ``drive(config)`` sends ``path`` to that server for about ``seconds``; operations sent."""

    def drive(config: str) -> int:
        plan = Plan(path, accounts, args.concurrency)
        done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples, _, _, _ = block_run(
                plan, ports[config], 4 if path == "token" else 60, warmup=0, timeout=TIMEOUT, meter=dict
            )
            done += len(samples)
        return done

    return drive


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.hotpaths", description=__doc__.split("\n\n")[0])
    add_common_args(p, name="bench-hotpaths", port_base=61500, prefix="hotpaths", docs_plot=DOCS_PLOT)
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds over the three servers (%(default)s)")
    p.add_argument("--requests", type=int, default=120, help="operations per block: list, detail, cart (%(default)s)")
    p.add_argument("--checkouts", type=int, default=24, help="checkouts (cart add + order) per block (%(default)s)")
    p.add_argument("--logins", type=int, default=2, help="log-ins per block: PBKDF2, ~0.3 s CPU each (%(default)s)")
    p.add_argument("--concurrency", type=int, default=3, help="connections, closed loop; at most 3 (%(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured operations per connection (%(default)s)")
    p.add_argument(
        "--idle-seconds", type=float, default=2.0, help="no traffic, per server: the fixed cost (%(default)s)"
    )
    p.add_argument("--idle-every", type=int, default=4, help="rounds between two idle readings (%(default)s)")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="hot paths (all)")
    p.add_argument("--readers", type=int, default=30, help="cart readers, 3 items each (%(default)s)")
    p.add_argument(
        "--shoppers-per-connection", type=int, default=20, help="checkout shoppers per connection (%(default)s)"
    )
    p.add_argument("--server-cpus", default="0", help="taskset cpu list of the servers; '' = unpinned (%(default)s)")
    p.add_argument("--client-cpus", default="1", help="cpu list of the client; '' = unpinned (%(default)s)")
    p.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy profile of each path whose target is missed (auto), of every path, or none (%(default)s)",
    )
    p.add_argument(
        "--instructions",
        type=int,
        default=50,
        help="operations per block under callgrind (checkout: a fifth); 0 = no instruction counts (%(default)s)",
    )
    p.add_argument("--instruction-repeats", type=int, default=5, help="blocks per path under callgrind (%(default)s)")
    p.add_argument(
        "--instruction-idle-seconds",
        type=float,
        default=10.0,
        help="no traffic under callgrind, before the blocks and after each round of them (%(default)s)",
    )
    p.add_argument(
        "--syscalls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count system calls and context switches per operation with perf stat (%(default)s)",
    )
    p.add_argument("--profile-seconds", type=float, default=8.0, help="seconds of py-spy per server (%(default)s)")
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= THREADS - 1:
        p.error(
            f"--concurrency must be 1-{THREADS - 1}: a worker's classes share {THREADS - 1} of its {THREADS} threads"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    if shutil.which("taskset") is None:
        say("taskset not found: the servers and the client are not pinned")
    return run_bench(parse_args(argv), "hotpaths", measure, render)
