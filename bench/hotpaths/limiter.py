"""The rate limiter's own instructions per request, in one process under callgrind: limits on against off, block by
block in the same process, to a few thousand instructions.

Why beside the servers' counts (:mod:`bench.hotpaths.instructions`): there the limiter is the difference of two
servers' blocks, each with background threads taken out and a database reconnect landing on some blocks, which
leaves some 0.1 M instructions of noise per request, about as much as the limiter costs. Here nothing else runs:
Django's test client sends the requests through the whole middleware stack and the views (gunicorn apart), the
node monitor and the dashboard snapshot are not started, and each repeat counts a block with
``RATELIMIT_ENABLE`` off, then one with it on (``override_settings``, as the limiter's settings snapshot expects).
The limits count in Redis at 1,000,000 a minute, the global ``api`` scope from the worker's leases, as in the
hot-path servers. A third block per repeat, *exact*, counts the global scope in Redis on every request (no lease:
one script per request): its difference from the leased block is what a request that goes to Redis costs -- a
lease renewal, which the servers pay once per client, worker and window (on the cart read with 30 readers, about
one request in eight), and a request of a security scope, on every request.

``python -m bench.hotpaths.limiter`` (about 3 min): builds its own stack (``bench-limiter``, ports 61520-61522),
migrates it and loads the demo catalog, runs the measuring process under ``valgrind --tool=callgrind`` and prints
the table; ``--out`` keeps the raw dumps and ``limiter.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT, free_port, manage, say
from bench.stats import median

PATHS = {"detail": "product detail", "list": "product list", "cart": "cart read (Bearer token)"}


def _child(paths: list[str], requests: int, repeats: int) -> None:
    """Runs under callgrind: zero before a block, dump after it, labelled ``<path> <limits> <repeat>``."""
    import django

    django.setup()
    from django.test import Client, override_settings

    # Neither the node monitor's threads nor the dashboard snapshot's (it follows the same setting): only requests.
    override_settings(BULWARK_DB_MONITOR=False).enable()
    from django.db import connections

    for connection in connections.all():
        # Kept for the whole run: a reconnect (SCRAM's key stretching alone is some 65 M instructions) would land on
        # one block, ten times what is measured.
        connection.settings_dict["CONN_MAX_AGE"] = None
    from django.contrib.auth import get_user_model

    from resilience.auth.tokens import tokens_for_user
    from resilience.ratelimit import counting
    from shop.models import Product

    shim = ctypes.CDLL(os.environ["BENCH_CALLGRIND_SHIM"])
    ids = list(Product.objects.values_list("id", flat=True)[:60])
    reader, _ = get_user_model().objects.get_or_create(username="bench-limiter", defaults={"email": "l@bench.test"})
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {tokens_for_user(reader)['access']}"}
    client = Client()
    urls = {"detail": lambda i: f"/api/products/{ids[i % len(ids)]}/", "list": lambda i: "/api/products/?page_size=20"}
    urls["cart"] = lambda i: "/api/cart/"

    def block(path: str, count: int, start: int) -> None:
        for i in range(start, start + count):
            response = client.get(urls[path](i), **(bearer if path == "cart" else {}))
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}: {response.content[:300]!r}")

    served = 0
    for path in paths:
        for enabled in (False, True):
            with override_settings(RATELIMIT_ENABLE=enabled):
                block(path, 30, served)  # warm: caches, the connection, the first lease
                served += 30
        for repeat in range(repeats):
            for limits in ("off", "on", "exact"):
                leased = counting.LEASED_SCOPES
                if limits == "exact":
                    counting.LEASED_SCOPES = frozenset()  # every request's global scope in Redis, by one script
                try:
                    with override_settings(RATELIMIT_ENABLE=limits != "off"):
                        gc.collect()  # every block starts with the collector's generations empty
                        shim.bench_zero()
                        block(path, requests, served)
                        shim.bench_dump(f"{path} {limits} {repeat}".encode())
                finally:
                    counting.LEASED_SCOPES = leased
                served += requests


def summarise(dumps: list[tuple[str, int]], requests: int) -> dict[str, Any]:
    """Per path: instructions per request with the limits off and on (medians of the repeats) and the limiter's,
    the median of each repeat's on - off; where the repeats have an *exact* block, what going to Redis costs a
    request over being served from a lease (the median of each repeat's exact - on)."""
    blocks: dict[tuple[str, str], dict[int, float]] = {}
    for label, total in dumps:
        path, limits, repeat = label.split()
        blocks.setdefault((path, limits), {})[int(repeat)] = total / requests
    result: dict[str, Any] = {}
    for path in dict.fromkeys(path for path, _ in blocks):
        off, on = blocks[(path, "off")], blocks[(path, "on")]
        deltas = [on[r] - off[r] for r in sorted(off) if r in on]
        result[path] = {
            "off": median(list(off.values())),
            "on": median(list(on.values())),
            "limiter": median(deltas),
            "limiter_range": [min(deltas), max(deltas)],
            "repeats": len(deltas),
        }
        exact = blocks.get((path, "exact"), {})
        to_redis = [exact[r] - on[r] for r in sorted(on) if r in exact]
        if to_redis:
            result[path]["to_redis"] = median(to_redis)
            result[path]["to_redis_range"] = [min(to_redis), max(to_redis)]
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "path | limits off: M instr/request | limits on | the limiter: k instr/request (repeats' range) | "
        "a request that goes to Redis: k instr more (range)"
    ]
    for path, row in result.items():
        low, high = (value / 1e3 for value in row["limiter_range"])
        to_redis = "-"
        if "to_redis" in row:
            r_low, r_high = (value / 1e3 for value in row["to_redis_range"])
            to_redis = f"{row['to_redis'] / 1e3:.0f} ({r_low:.0f} to {r_high:.0f})"
        lines.append(
            f"{PATHS.get(path, path)} | {row['off'] / 1e6:.3f} | {row['on'] / 1e6:.3f} | "
            f"{row['limiter'] / 1e3:.0f} ({low:.0f} to {high:.0f}) | {to_redis}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpaths.limiter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["detail", "cart"])
    parser.add_argument("--requests", type=int, default=150, help="requests per block (150)")
    parser.add_argument("--repeats", type=int, default=4, help="blocks per path and setting (4)")
    parser.add_argument("--out", type=Path, help="keep the dumps and limiter.json here")
    parser.add_argument("--name", default="bench-limiter")
    parser.add_argument("--port-base", type=int, default=61520)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.paths, args.requests, args.repeats)
        return 0
    from bench.hotpaths.instructions import dump_read, shim_build, unavailable
    from bench.hotpaths.run import app_env
    from devstack.stack import Stack

    missing = unavailable()
    if missing:
        say(f"cannot count instructions here: {missing}")
        return 1
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-limiter-"))
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(name=args.name, port_base=args.port_base, echo=lambda m: say(f"devstack: {m}"))
    try:
        stack_env = stack.up()
        stack_env["_SECRET_KEY"], stack_env["_JWT_SECRET"] = os.urandom(48).hex(), os.urandom(48).hex()
        env = {**app_env(stack_env, free_port(), "on"), "BENCH_CALLGRIND_SHIM": str(shim_build(out))}
        env["ALLOWED_HOSTS"] = "testserver"  # Django's test client
        manage("migrate", "--noinput", env=env)
        manage("seed_demo", "-v", "0", env=env)
        say(f"counting {', '.join(args.paths)} under callgrind: {args.repeats} x {args.requests} requests each way")
        child = [sys.executable, "-m", "bench.hotpaths.limiter", "--child", "--paths", *args.paths]
        child += ["--requests", str(args.requests), "--repeats", str(args.repeats)]
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out.%p"]
        valgrind += ["--dump-line=no", "--dump-instr=no"]
        with (out / "child.log").open("wb") as log:
            done = subprocess.run([*valgrind, *child], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            say(f"the measuring process failed (exit {done.returncode}); see {out / 'child.log'}")
            return 1
    finally:
        stack.down()
    dumps = []
    for path in sorted(out.glob("callgrind.out.*")):
        try:
            dumps.append(dump_read(path))
        except RuntimeError:
            continue  # the dump at the process's exit
    result = summarise(dumps, args.requests)
    (out / "limiter.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    say(f"raw dumps and limiter.json in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
