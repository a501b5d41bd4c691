"""Run the serving benchmark: checkout and login while a flood of catalog reads waits on a stuck dependency,
against the bulkheaded server and against one undivided pool, side by side.

The run

1. builds a fresh devstack stack (``bench-serving``, ports 61400-61402), migrates it, loads the demo catalog,
   gives every product a stock no run can exhaust, and creates the accounts in one go (one real PBKDF2 hash for
   all: registering them over HTTP would cost 0.6 s of CPU each); the shoppers' access tokens are minted in a
   ``manage.py shell`` with the servers' keys;
2. starts two gunicorn servers against it, the same but for one setting: ``bulkheaded`` (``settings.base``,
   ``SERVING_BULKHEADS = True``) and ``undivided`` (``DJANGO_SETTINGS_MODULE=bench.serving.undivided_settings``:
   the bulkheads count but never refuse, one pool of threads for every class); both ``WEB_CONCURRENCY=2``,
   ``WEB_THREADS=8``, the default class limits, ``SERVING_BUDGET_CATALOG=2s``, ``RATELIMIT_ENABLED=false``;
3. checks what the stuck dependency holds up (:func:`isolation_check`): with the lock held for a few seconds,
   one catalog read, category list, login, cart add and order are sent at once; what waits and which statements
   PostgreSQL lists as waiting for the lock are recorded. A cart add that waits (its response joins the
   category table) makes the checkout the order alone, with every shopper's cart filled before the phase;
4. for ``--rounds`` rounds, for each server in turn (the order alternates per round):

   - *unloaded*: the login client (``POST /api/auth/token/`` back to back), the checkout client (one checkout
     every ``--checkout-interval`` s, each as the next shopper) and the prober (``/health/ready`` and
     ``/health/live`` every ``--probe-interval`` s) for ``--phase-seconds``;
   - *flood*: the category lock is taken (and seen replayed on the replica), the open-loop flood of
     ``GET /api/products/<id>/`` starts at ``--flood-factor`` times what the server's catalog bulkheads admit
     (limit x workers / budget per second), ``--warmup`` seconds later the same clients run for
     ``--phase-seconds``; then the flood stops, the lock is released and the server is given time to drain;

5. reads each server's serving counters from ``/metrics``, stops everything and takes the stack down.

Every request is recorded to ``bench/results/serving-<time>/requests.jsonl`` (the flood's to ``flood.jsonl``);
:mod:`bench.serving.report` makes the tables, the plot and the section of ``docs/benchmarks.md``. Everything
started here is stopped again on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
import requests
import urllib3

from bench.harness import (
    HOST,
    ROOT,
    Gunicorn,
    add_common_args,
    announce_code,
    args_meta,
    free_port,
    fresh_stack,
    load_average,
    manage,
    publish_run,
    run_bench,
    say,
    server_env,
)
from bench.serving import report
from bench.serving.load import (
    CategoryLock,
    CheckoutClient,
    Flood,
    LoginClient,
    Prober,
    Sample,
    call,
    carts_fill,
    cpu_delta,
    cpu_sample,
    stack_pids,
)
from devstack import Stack
from resilience.config import load_config

DOCS_PLOT = ROOT / "docs" / "bench" / "serving.png"
VARIANTS = ("bulkheaded", "undivided")
SETTINGS_MODULES = {"bulkheaded": "settings.base", "undivided": "bench.serving.undivided_settings"}
REDIS_DB = {"bulkheaded": 0, "undivided": 1}
WORKERS = 2
THREADS = 8
PASSWORD = "bench serving correct horse"  # noqa: S105 - throwaway accounts on a throwaway stack
LOGIN_TIMEOUT = 10.0
CHECKOUT_TIMEOUT = 20.0  # above the checkout class's 15 s budget
FLOOD_TIMEOUT = 10.0
RELEASE_SLACK = 0.1  # s: an isolation-check request that ended this close to the lock's release waited for it
SERVING_COUNTER = re.compile(r"^bulwark_serving_requests_total\{([^}]*)\} (\S+)$", re.M)


def app_env(stack_env: dict[str, str], port: int, variant: str, args: argparse.Namespace) -> dict[str, str]:
    return server_env(
        SECRET_KEY=stack_env["_SECRET_KEY"],
        JWT_SECRET=stack_env["_JWT_SECRET"],
        DATABASE_URL=stack_env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        # One Redis server, a database each: the servers are two fleets (node trips, worker snapshots, breakers
        # and rate-limit counters are shared through it), so one's view of a node does not spill into the other.
        REDIS_URL=re.sub(r"/\d+$", f"/{REDIS_DB[variant]}", stack_env["REDIS_URL"]),
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULES[variant],
        RATELIMIT_ENABLED="false",  # one client address: the limits would be the thing measured
        WEB_CONCURRENCY=str(WORKERS),
        WEB_THREADS=str(THREADS),
        SERVING_BUDGET_CATALOG=args.catalog_budget,
        JWT_EXPIRES_IN="6h",  # the shoppers' tokens are minted once, for the whole run
        PORT=str(port),
    )


ACCOUNTS_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from resilience.auth.tokens import tokens_for_user
User = get_user_model()
password = make_password({password!r})
names = [{login!r}] + ["bench-shopper-%04d" % i for i in range({shoppers})]
User.objects.bulk_create([User(username=n, email=n + "@bench.invalid", password=password) for n in names])
shoppers = User.objects.using("default").filter(username__startswith="bench-shopper-").order_by("username")
with open({path!r}, "w") as out:
    json.dump([tokens_for_user(u)["access"] for u in shoppers], out)
"""


def accounts_create(env: dict[str, str], out: Path, shoppers: int) -> list[str]:
    """The login account and ``shoppers`` shoppers, one real PBKDF2 hash for all; the shoppers' access tokens."""
    path = out / "tokens.json"
    script = ACCOUNTS_SCRIPT.format(password=PASSWORD, login="bench-login", shoppers=shoppers, path=str(path))
    manage("shell", "-c", script, env=env)
    tokens = json.loads(path.read_text())
    path.unlink()  # credentials: not kept with the results
    return tokens


def stock_unlimited(primary_url: str) -> None:
    with psycopg.connect(primary_url, autocommit=True) as conn:
        conn.execute("UPDATE shop_product SET stock = 100000000")


def serving_counters(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for labels, value in SERVING_COUNTER.findall(text):
        parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{parts.get('traffic_class')}:{parts.get('outcome')}"
        found[key] = found.get(key, 0.0) + float(value)
    return found


def warm_up(server: Gunicorn, port: int, tokens: list[str], product_ids: list[int]) -> None:
    """First requests of each kind (imports, connections, key ring) outside any measurement."""
    login = LoginClient(port, "bench-login", PASSWORD, timeout=LOGIN_TIMEOUT)
    for _ in range(3):
        login.step()
    checkout = CheckoutClient(
        port, tokens, product_ids, interval=0, timeout=CHECKOUT_TIMEOUT, with_cart_add=True, seed=1
    )
    for _ in range(5):
        checkout.step()
    for product_id in product_ids[:10]:
        requests.get(f"{server.url}/api/products/{product_id}/", timeout=10).raise_for_status()
    bad = [s for s in login.samples + checkout.samples if s.status not in (200, 201)]
    if bad:
        raise RuntimeError(f"warm-up requests failed on {server.url}: {bad[:3]}")


def isolation_check(lock: CategoryLock, port: int, token: str, product_ids: list[int], hold: float) -> dict[str, Any]:
    """Hold the lock ``hold`` seconds while one request of each kind runs; what waited, what PostgreSQL saw.

    ``hold`` stays below the node deadline (``DB_QUERY_TIMEOUT``): past it, the watchdog cuts a statement that
    waits for the lock and marks its node down (a waiting cart add takes the primary down for its worker)."""
    carts_fill(port, [token], product_ids, seed=3, timeout=CHECKOUT_TIMEOUT)  # the order below has something
    auth = {"Authorization": f"Bearer {token}"}
    sends: dict[str, dict[str, Any]] = {
        "catalog: GET /api/products/<id>/": {"method": "GET", "path": f"/api/products/{product_ids[0]}/"},
        "catalog: GET /api/categories/": {"method": "GET", "path": "/api/categories/"},
        "auth: POST /api/auth/token/ (login)": {
            "method": "POST",
            "path": "/api/auth/token/",
            "body": {"username": "bench-login", "password": PASSWORD},
        },
        "checkout: POST /api/orders/ (cart filled before)": {
            "method": "POST",
            "path": "/api/orders/",
            "headers": {**auth, "Idempotency-Key": uuid.uuid4().hex},
        },
        "checkout: POST /api/cart/items/ (cart add)": {
            "method": "POST",
            "path": "/api/cart/items/",
            "body": {"product_id": product_ids[1], "quantity": 1},
            "headers": auth,
        },
    }
    results: dict[str, Sample] = {}

    def send(name: str, spec: dict[str, Any]) -> None:
        pool = urllib3.HTTPConnectionPool(HOST, port, maxsize=1, retries=False)
        results[name], _ = call(
            pool,
            name,
            spec["method"],
            spec["path"],
            body=spec.get("body"),
            headers=spec.get("headers"),
            timeout=CHECKOUT_TIMEOUT,
        )
        pool.close()

    taken = lock.take()
    started = time.monotonic()
    threads = [threading.Thread(target=send, args=item, daemon=True) for item in sends.items()]
    for thread in threads:
        thread.start()
    time.sleep(min(1.0, hold / 2))
    waiting = lock.waiting()
    time.sleep(max(0.0, hold - (time.monotonic() - started)))
    lock.release()
    released = time.monotonic() - started
    for thread in threads:
        thread.join(CHECKOUT_TIMEOUT + 5)
    seen = {
        name: {
            "latency": round(s.latency, 3),
            "status": s.status,
            "code": s.code,
            # It ended only when the lock went (or was cut at its budget): it waited for the lock.
            "waited": s.start + s.latency >= started + released - RELEASE_SLACK or s.code == "request_timeout",
        }
        for name, s in results.items()
    }
    say(
        f"isolation check (lock held {released:.1f} s): "
        + "; ".join(f"{n} {r['status']} {r['latency'] * 1000:.0f} ms" for n, r in seen.items())
    )
    return {"hold_seconds": round(released, 3), "lock": taken, "requests": seen, "waiting": waiting}


def drain(server: Gunicorn, limit: float = 180.0) -> float:
    """Seconds until six fresh-connection ``/health/live`` in a row answer within 0.25 s (the queue is gone)."""
    started = time.monotonic()
    good = 0
    while good < 6 and time.monotonic() - started < limit:
        began = time.monotonic()
        try:
            ok = requests.get(f"{server.url}/health/live", timeout=2).status_code == 200
        except requests.RequestException:
            ok = False
        good = good + 1 if ok and time.monotonic() - began < 0.25 else 0
        time.sleep(0.2)
    return round(time.monotonic() - started, 2)


class Phases:
    """The rounds: every phase's samples and the facts about it, in the order they were measured."""

    def __init__(
        self,
        args: argparse.Namespace,
        servers: dict[str, Gunicorn],
        ports: dict[str, int],
        lock: CategoryLock,
        tokens: list[str],
        product_ids: list[int],
        flood_rate: float,
        with_cart_add: bool,
        stack_pids: list[int],
    ) -> None:
        self.args = args
        self.servers = servers
        self.ports = ports
        self.lock = lock
        self.tokens = tokens
        self.product_ids = product_ids
        self.flood_rate = flood_rate
        self.with_cart_add = with_cart_add
        self.shoppers_per_phase = math.ceil(args.phase_seconds / args.checkout_interval) + 5
        self.records: list[dict[str, Any]] = []
        self.flood_records: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.epoch = time.monotonic()
        self.pids = {name: server.process.pid for name, server in servers.items()}
        self.stack_pids = stack_pids

    def _keep(self, samples: list[Sample], base: dict[str, Any]) -> None:
        for s in samples:
            row = {**base, **asdict(s)}
            row["start"] = round(s.start - self.epoch, 4)
            row["latency"] = round(s.latency, 5)
            if not row["extra"]:
                row.pop("extra")
            self.records.append(row)

    def run(self, round_no: int, variant: str, phase: str) -> None:
        args = self.args
        port = self.ports[variant]
        server = self.servers[variant]
        base = {"round": round_no, "variant": variant, "phase": phase}
        info: dict[str, Any] = {**base}
        seed = args.seed * 1000 + round_no * 10 + (phase == "flood") + 2 * (variant == "undivided")
        if not self.with_cart_add:
            fill = carts_fill(
                port, self.tokens[: self.shoppers_per_phase], self.product_ids, seed=seed, timeout=CHECKOUT_TIMEOUT
            )
            failed = [s for s in fill if s.status != 201]
            if failed:
                raise RuntimeError(f"filling the carts failed on {variant}: {failed[:3]}")
            self._keep(fill, {**base, "phase": f"{phase}-fill"})
        prober = Prober(port, args.probe_interval)
        prober.start()
        info["probes_from"] = round(time.monotonic() - self.epoch, 3)
        flood = None
        if phase == "flood":
            info["lock"] = self.lock.take()
            flood = Flood(
                port,
                self.flood_rate,
                self.product_ids,
                timeout=FLOOD_TIMEOUT,
                senders=args.flood_senders,
                seed=seed,
            )
            flood.start()
            info["flood_from"] = round(flood.started_at - self.epoch, 3)
            time.sleep(args.warmup)
            info["waiting_for_lock"] = self.lock.waiting()
        login = LoginClient(port, "bench-login", PASSWORD, timeout=LOGIN_TIMEOUT)
        checkout = CheckoutClient(
            port,
            self.tokens[: self.shoppers_per_phase],
            self.product_ids,
            interval=args.checkout_interval,
            timeout=CHECKOUT_TIMEOUT,
            with_cart_add=self.with_cart_add,
            seed=seed,
        )
        cpu_before = cpu_sample(self.pids, self.stack_pids)
        info["measured_from"] = round(time.monotonic() - self.epoch, 3)
        login.start()
        checkout.start()
        time.sleep(args.phase_seconds)
        info["measured_to"] = round(time.monotonic() - self.epoch, 3)  # clients start nothing after this
        logins, checkouts = login.stop(), checkout.stop()
        info["cpu"] = cpu_delta(cpu_before, cpu_sample(self.pids, self.stack_pids))
        if flood is not None:
            flood.stop(wait=FLOOD_TIMEOUT + 2)
            info["flood_to"] = round(flood.stopped_at - self.epoch, 3)
            self.lock.release()
            info["lock_released"] = round(time.monotonic() - self.epoch, 3)
            info["flood"] = {
                "rate": self.flood_rate,
                "arrivals": flood.arrivals,
                "achieved_rate": round(flood.arrivals / max(1e-9, flood.stopped_at - flood.started_at), 3),
                "peak_in_flight": flood.peak_busy,
                "senders": args.flood_senders,
                "unfinished": flood.arrivals - len(flood.records),
            }
            for r in flood.records:
                row = asdict(r)
                row.update(base)
                row["due"] = round(r.due - self.epoch, 4)
                row["delay"] = round(r.delay, 5)
                row["latency"] = round(r.latency, 5)
                self.flood_records.append(row)
        info["drain_seconds"] = drain(server)
        probes = prober.stop()
        info["probes_to"] = round(time.monotonic() - self.epoch, 3)
        self._keep(logins + checkouts + probes, base)
        self.phases.append(info)
        bad_probes = sum(1 for p in probes if p.status != 200)
        say(
            f"round {round_no + 1} {variant:<10} {phase:<8}: {len(logins)} logins, {len(checkouts)} checkouts, "
            f"{len(probes)} probes ({bad_probes} not 200)"
            + (f", flood {info['flood']['arrivals']} requests" if flood is not None else "")
            + f"; drained in {info['drain_seconds']} s; load generator {info['cpu']['load_generator']:.3f} cores"
        )


def machine_facts(primary_url: str) -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    with psycopg.connect(primary_url, autocommit=True) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": pg,
    }


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    run_started = time.monotonic()
    stack_env = fresh_stack(stack)
    stack_env["_SECRET_KEY"], stack_env["_JWT_SECRET"] = os.urandom(48).hex(), os.urandom(48).hex()
    ports = {variant: free_port() for variant in VARIANTS}
    envs = {variant: app_env(stack_env, ports[variant], variant, args) for variant in VARIANTS}
    config = load_config(envs["bulkheaded"])
    serving = config.serving
    admitted = serving.limits["catalog"] * config.web_concurrency / serving.budgets["catalog"]
    flood_rate = args.flood_factor * admitted
    shoppers = math.ceil(args.phase_seconds / args.checkout_interval) + 5
    say("migrate + seed_demo + accounts")
    manage("migrate", "--noinput", env=envs["bulkheaded"])
    manage("seed_demo", "-v", "0", env=envs["bulkheaded"])
    stock_unlimited(stack_env["DATABASE_URL"])
    tokens = accounts_create(envs["bulkheaded"], out, shoppers + 1)
    iso_token, tokens = tokens[-1], tokens[:-1]
    code = announce_code()
    servers = {variant: Gunicorn(envs[variant], out / f"gunicorn-{variant}.log") for variant in VARIANTS}
    for server in servers.values():
        cleanup.append(server.stop)
    for server in servers.values():
        server.wait_ready()
    products = requests.get(f"{servers['bulkheaded'].url}/api/products/", params={"page_size": 100}, timeout=30)
    products.raise_for_status()
    product_ids = [p["id"] for p in products.json()["results"]]
    for variant in VARIANTS:
        warm_up(servers[variant], ports[variant], tokens, product_ids)
    lock = CategoryLock(stack_env["DATABASE_URL"], stack_env["DATABASE_REPLICA_URLS"])
    cleanup.append(lock.release)
    hold = min(args.isolation_hold, config.db_query_timeout.total_seconds() - 1)
    isolation = isolation_check(lock, ports["bulkheaded"], iso_token, product_ids, hold)
    cart_waits = isolation["requests"]["checkout: POST /api/cart/items/ (cart add)"]["waited"]
    with_cart_add = {"auto": not cart_waits, "cart+order": True, "order": False}[args.checkout]
    say(
        f"flood: {flood_rate:g} requests/s = {args.flood_factor:g} x what the catalog bulkheads admit "
        f"({serving.limits['catalog']} x {config.web_concurrency} workers / {serving.budgets['catalog']:g} s); "
        f"checkout measured as {'cart add + order' if with_cart_add else 'the order alone (carts filled before)'}"
    )
    time.sleep(3)  # the isolation check's cut-off requests are gone
    pids = stack_pids(stack.name, int(stack_env["DEVSTACK_REDIS_PORT"]))
    phases = Phases(args, servers, ports, lock, tokens, product_ids, flood_rate, with_cart_add, pids)
    load_before = load_average()
    measured_started = time.monotonic()
    for round_no in range(args.rounds):
        order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            for phase in ("unloaded", "flood"):
                phases.run(round_no, variant, phase)
    measured_seconds = time.monotonic() - measured_started
    load_after = load_average()
    counters = {variant: serving_counters(server.url) for variant, server in servers.items()}
    for server in servers.values():
        server.stop()
        cleanup.remove(server.stop)
    facts = machine_facts(stack_env["DATABASE_URL"])
    stack.down()
    findings = {variant: report.scan_log(server.log_path) for variant, server in servers.items()}
    say(f"load average before {load_before}, after {load_after}; logs {findings}")
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in phases.records))
    (out / "flood.jsonl").write_text("".join(json.dumps(r) + "\n" for r in phases.flood_records))
    settings_used = {
        k: v
        for k, v in envs["bulkheaded"].items()
        if k.startswith(("WEB_", "SERVING_", "RATELIMIT", "JWT_EXPIRES", "DJANGO_ENV"))
    }
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "settings": settings_used,
        "settings_modules": SETTINGS_MODULES,
        "serving": {
            "workers": config.web_concurrency,
            "threads": serving.threads,
            "limits": serving.limits,
            "budgets": serving.budgets,
            "db_query_deadline": config.db_query_timeout.total_seconds(),
        },
        "flood": {
            "rate": flood_rate,
            "admitted_per_second": admitted,
            "factor": args.flood_factor,
            "path": "/api/products/<id>/",
            "timeout": FLOOD_TIMEOUT,
        },
        "timeouts": {"login": LOGIN_TIMEOUT, "checkout": CHECKOUT_TIMEOUT, "probe": Prober.TIMEOUT},
        "checkout_flow": "cart+order" if with_cart_add else "order",
        "isolation": isolation,
        "phases": phases.phases,
        "serving_counters": counters,
        "log_findings": findings,
        "loadavg": {"before": load_before, "after": load_after},
        "machine": facts,
        "git": code,
        "seconds": {"measured": round(measured_seconds), "run": round(time.monotonic() - run_started)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    add_common_args(p, name="bench-serving", port_base=61400, prefix="serving", docs_plot=DOCS_PLOT)
    p.add_argument("--rounds", type=int, default=3, help="rounds over both servers (%(default)s)")
    p.add_argument(
        "--phase-seconds", type=float, default=180.0, help="measured seconds per phase (%(default)s: ~200 logins)"
    )
    p.add_argument("--warmup", type=float, default=4.0, help="seconds of flood before measuring (%(default)s)")
    p.add_argument(
        "--flood-factor",
        type=float,
        default=3.0,
        help="flood rate as a multiple of what the catalog bulkheads admit per second (%(default)s)",
    )
    p.add_argument("--flood-senders", type=int, default=200, help="flood sender threads (%(default)s)")
    p.add_argument("--catalog-budget", default="2s", help="SERVING_BUDGET_CATALOG of both servers (%(default)s)")
    p.add_argument("--checkout-interval", type=float, default=0.3, help="seconds between checkouts (%(default)s)")
    p.add_argument("--probe-interval", type=float, default=0.15, help="seconds between probe pairs (%(default)s)")
    p.add_argument(
        "--checkout",
        choices=("auto", "cart+order", "order"),
        default="auto",
        help="what a checkout sample is; auto: cart add + order unless the cart add waits for the lock (%(default)s)",
    )
    p.add_argument(
        "--isolation-hold",
        type=float,
        default=4.0,
        help="seconds the isolation check holds the lock, below DB_QUERY_TIMEOUT (%(default)s)",
    )
    p.add_argument("--seed", type=int, default=17, help="flood and product choice seed (%(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "serving", measure, render)
