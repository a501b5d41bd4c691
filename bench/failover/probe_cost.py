"""What the node monitor costs in steady state: transactions per second per gunicorn worker on each node while the
server is idle (probes and the switch read are the only traffic).

``python -m bench.failover.probe_cost [--workers 2] [--seconds 20]``: a fresh stack of its own
(``bench-probecost``, ports 61100-61102), gunicorn, one request per worker so every monitor runs, then
``pg_stat_database.xact_commit`` on the primary and the replica read before and after an idle window. Every probe
and switch read is one autocommit transaction, so the difference divided by the window and the workers is the
rate per worker.
"""

from __future__ import annotations

import argparse
import secrets
import time

import requests

from bench.harness import RESULTS, ROOT, Gunicorn, free_port, fresh_stack, manage, say, server_env
from devstack import Stack

COUNT = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bulwark'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover.probe_cost", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    stack = Stack(name="bench-probecost", port_base=61100, project_root=ROOT)
    server = None
    try:
        stack_env = fresh_stack(stack)
        env = server_env(
            **{key: value for key, value in stack_env.items() if key.startswith(("DATABASE_", "REDIS_"))},
            SECRET_KEY=secrets.token_urlsafe(64),
            JWT_SECRET=secrets.token_urlsafe(48),
            RATELIMIT_ENABLED="false",
            WEB_CONCURRENCY=str(args.workers),
            PORT=str(free_port()),
        )
        manage("migrate", "--noinput", env=env)
        RESULTS.mkdir(parents=True, exist_ok=True)
        server = Gunicorn(env, RESULTS / "probe_cost_gunicorn.log")
        server.wait_ready()
        for _ in range(20 * args.workers):  # every worker serves a request: its monitor starts on the first
            requests.get(f"{server.url}/api/categories/", timeout=10)
        time.sleep(2)
        before = {node: int(stack.psql(node, COUNT)) for node in ("primary", "replica")}
        time.sleep(args.seconds)
        after = {node: int(stack.psql(node, COUNT)) for node in ("primary", "replica")}
        for node in ("primary", "replica"):
            rate = (after[node] - before[node]) / args.seconds / args.workers
            say(f"{node}: {rate:.1f} transactions/s per worker while idle ({args.workers} workers, {args.seconds:g} s)")
    finally:
        if server is not None:
            server.stop()
        stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
