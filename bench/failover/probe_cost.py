"""What the node monitor costs in steady state, per gunicorn worker: probe queries per second on each node, and
the CPU time the monitor's threads take.

``python -m bench.failover.probe_cost [--seconds 20]``: a fresh stack of its own (``bench-probecost``, ports
61100-61102), Django set up against it in this process, and one :class:`NodeMonitor` -- exactly what each worker
runs -- started on the process's registry for an idle window; nothing else runs in the process, so its CPU time
over the window is the monitor's. (The server-side ``pg_stat_database`` counters are not used: PostgreSQL flushes
an always-busy session's statistics too rarely to count a probe rate with them.)
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import time

from bench.harness import ROOT, fresh_stack, say
from devstack import Stack


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover.probe_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    stack = Stack(name="bench-probecost", port_base=61100, project_root=ROOT)
    try:
        stack_env = fresh_stack(stack)
        os.environ.update({key: value for key, value in stack_env.items() if key.startswith(("DATABASE_", "REDIS_"))})
        os.environ.update(
            DJANGO_SETTINGS_MODULE="settings.base",
            DJANGO_ENV="development",
            DOTENV_FILE="none",
            SECRET_KEY=secrets.token_urlsafe(64),
            JWT_SECRET=secrets.token_urlsafe(48),
        )
        import django

        django.setup()
        from django.core.management import call_command

        from resilience.db.monitor import HOUSEKEEPING_SECONDS, PROBE_INTERVAL_SECONDS, NodeMonitor
        from resilience.db.nodes import registry

        call_command("migrate", "--noinput", verbosity=0)
        nodes = registry()
        monitor = NodeMonitor(nodes)
        monitor.start()
        time.sleep(1)  # connections open, first rounds done
        probes, cpu, started = monitor.probes, _cpu_seconds(), time.monotonic()
        time.sleep(args.seconds)
        probes, cpu = monitor.probes - probes, _cpu_seconds() - cpu
        elapsed = time.monotonic() - started
        monitor.stop()
        node_count = 1 + len(nodes.replica_aliases)
        say(
            f"probes: {probes / elapsed:.1f}/s per worker ({probes / elapsed / node_count:.1f}/s per node; interval "
            f"{PROBE_INTERVAL_SECONDS:g} s), plus one switch read every {HOUSEKEEPING_SECONDS:g} s"
        )
        say(f"monitor CPU: {cpu / elapsed * 1000:.1f} ms per second per worker ({cpu / elapsed:.2%} of one core)")
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
