"""``python -m bench.schema``: Schemathesis against gunicorn, three seeded runs, the OpenAPI schema vs the API.

For each seed (default :data:`SEEDS`, printed) the run

1. builds a fresh devstack stack (``bench-schema``, ports 61300-61302), migrates it, loads the demo catalog and
   gives every product a large stock (checkouts buy one unit each);
2. starts gunicorn (``settings.wsgi``, 2 workers, rate limits off: a 429 is documented, but a run that hits
   limits tests the limiter, not the schema) and registers the fuzzing user;
3. runs ``st run <server>/api/schema/`` with every check (the default), one worker (a shared user and cart:
   concurrent cases would race each other), the seed, and ``bench/schema/schemathesis.toml`` (every warning
   fatal, the login, what a schema cannot say) with the hooks of :mod:`bench.schema.hooks`;
4. stops gunicorn and takes the stack down.

Each run's console output, Schemathesis's JSON report and the gunicorn log go to
``bench/results/schema-<time>/``; ``--publish`` also writes docs/schema_conformance.md. The exit code is 0 only
when every run passed with no failure and no warning. Everything started here is stopped again on success,
error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    ROOT,
    Gunicorn,
    announce_code,
    bench_stack,
    free_port,
    fresh_stack,
    manage,
    results_dir,
    say,
    server_env,
    sigterm_as_interrupt,
    teardown,
)
from bench.schema import report

SEEDS = (20261201, 20261202, 20261203)
CONFIG = ROOT / "bench" / "schema" / "schemathesis.toml"
DOCS = ROOT / "docs" / "schema_conformance.md"
USERNAME = "schemathesis"
ST_TIMEOUT = 1500  # seconds per run; a default run takes one to two minutes
STOCK = 10**7
RAISE_STOCK = f"from shop.catalog.models import Product; Product.objects.update(stock={STOCK})"


def st_command(url: str, seed: int, report_dir: Path, max_examples: int | None) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG.relative_to(ROOT)),
        "run",
        f"{url}/api/schema/?format=json",
        # No --checks: every check is on by default, and one named here would override the configuration's
        # per-operation exceptions.
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
    ]
    return [*command, "--max-examples", str(max_examples)] if max_examples else command


def register(url: str, password: str) -> None:
    response = requests.post(
        f"{url}/api/auth/register/",
        json={"username": USERNAME, "email": f"{USERNAME}@example.com", "password": password},
        timeout=10,
    )
    if response.status_code != 201:
        raise RuntimeError(f"could not register the fuzzing user: {response.status_code} {response.text[:300]}")


def first_product_id(url: str) -> int:
    response = requests.get(f"{url}/api/products/", params={"page_size": 1}, timeout=10)
    response.raise_for_status()
    return response.json()["results"][0]["id"]


def run_seed(args: argparse.Namespace, seed: int, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    """One seed on its own fresh stack and server; returns what :mod:`bench.schema.report` needs."""
    stack = bench_stack(args)
    stack_env = fresh_stack(stack, prefix=f"[seed {seed}] ")
    cleanup.append(stack.down)
    env = server_env(
        SECRET_KEY=secrets.token_urlsafe(64),
        JWT_SECRET=secrets.token_urlsafe(48),
        DATABASE_URL=stack_env["DATABASE_URL"],
        DATABASE_REPLICA_URLS=stack_env["DATABASE_REPLICA_URLS"],
        REDIS_URL=stack_env["REDIS_URL"],
        RATELIMIT_ENABLED="false",
        WEB_CONCURRENCY="2",
        PORT=str(free_port()),
        LOG_LEVEL="WARNING",
    )
    say(f"[seed {seed}] migrate + seed_demo + large stock")
    manage("migrate", "--noinput", env=env)
    manage("seed_demo", "-v", "0", env=env)
    manage("shell", "-c", RAISE_STOCK, env=env)
    server = Gunicorn(env, out / f"gunicorn-{seed}.log")
    cleanup.append(server.stop)
    server.wait_ready()
    password = secrets.token_urlsafe(18)
    register(server.url, password)
    st_env = {
        **os.environ,
        "BULWARK_SCHEMA_URL": server.url,
        "BULWARK_SCHEMA_USERNAME": USERNAME,
        "BULWARK_SCHEMA_PASSWORD": password,
        "BULWARK_SCHEMA_PRODUCT_ID": str(first_product_id(server.url)),
        "BULWARK_SCHEMA_RUN": f"s{seed}",
        "SCHEMATHESIS_HOOKS": "bench.schema.hooks",
    }
    report_dir = out / f"report-{seed}"
    command = st_command(server.url, seed, report_dir, args.max_examples)
    say(f"[seed {seed}] {shlex.join(command)}")
    started = time.monotonic()
    with (out / f"st-{seed}.txt").open("w") as console:
        done = subprocess.run(
            command, cwd=ROOT, env=st_env, stdout=console, stderr=subprocess.STDOUT, timeout=ST_TIMEOUT, check=False
        )
    elapsed = time.monotonic() - started
    server.stop()
    stack.down()
    [json_report] = sorted(report_dir.glob("*.json"))
    result = {"seed": seed, "exit_code": done.returncode, "seconds": round(elapsed, 1), "report": str(json_report)}
    say(f"[seed {seed}] schemathesis exited {done.returncode} after {elapsed:.0f} s; see {out / f'st-{seed}.txt'}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.schema", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="bench-schema", help="devstack stack name (%(default)s)")
    p.add_argument("--port-base", type=int, default=61300, help="devstack port base (%(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="one run per seed (%(default)s)")
    p.add_argument("--max-examples", type=int, default=None, help="per operation (Schemathesis's default: 100)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/schema-<time>)")
    p.add_argument("--publish", action="store_true", help=f"also write {DOCS.relative_to(ROOT)}")
    p.add_argument("--report", type=Path, metavar="DIR", help="only re-render the report of an earlier run's folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report.render(args.report, publish_to=DOCS if args.publish else None)
    out = results_dir(args, "schema")
    say(f"seeds: {' '.join(map(str, args.seeds))}")
    code = announce_code()
    runs: list[dict[str, Any]] = []
    cleanup: list[Callable[[], None]] = []
    try:
        with sigterm_as_interrupt():
            for seed in args.seeds:
                runs.append(run_seed(args, seed, out, cleanup))
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    finally:
        teardown(cleanup, bench_stack(args))
    meta = {"seeds": args.seeds, "max_examples": args.max_examples, "code": code, "runs": runs}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return report.render(out, publish_to=DOCS if args.publish else None)
