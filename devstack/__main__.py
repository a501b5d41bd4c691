"""Command line for devstack (``python -m devstack ...``): argument parsing and output only.

All the work happens in :class:`devstack.stack.Stack` (``kill``, ``hang``, ``resume``, ``slow``, ``promote``
and ``delay`` in :mod:`devstack.faults`, which it inherits). Progress notes go to stderr; machine-readable output
(``env`` lines, also printed by ``up``; ``status``) goes to stdout, so ``eval "$(python -m devstack up)"``
works. A :class:`~devstack.procs.DevstackError` is printed as one paragraph, without a traceback, with exit
status 1. ``status`` exits 1 when any node is down. ``pools ...`` runs split gunicorn pools behind HAProxy against
the stack (:mod:`devstack.pools`). ``ha ...`` runs a separate scale-out topology (Patroni, Sentinels, HAProxy, two
app hosts; :mod:`devstack.ha`), named ``ha`` by default.
"""

from __future__ import annotations

import argparse
import json
import sys

from .procs import DevstackError
from .stack import Stack
from .state import DEFAULT_NAME, DEFAULT_PORT_BASE, NODES

NODE_COMMANDS = {
    "kill": "SIGKILL the node's postmaster / redis-server (a real crash)",
    "hang": "SIGSTOP the node (postmaster and all its descendants / the redis server)",
    "resume": "SIGCONT a hung node; end a slowed node's stop/continue cycle",
    "start": "start a stopped or killed node and wait until it accepts connections",
    "stop": "cleanly stop a node (pg_ctl stop -m fast / SIGTERM)",
    "restart": "stop, then start a node",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Throwaway local PostgreSQL primary + streaming replica + Redis on 127.0.0.1.",
        epilog="Ports: N = primary, N+1 = replica, N+2 = redis (N = --port-base).",
    )
    # None: the command's own default (DEFAULT_NAME for the stack, "ha" for `ha`).
    parser.add_argument("--name", default=None, help=f"stack name (default: {DEFAULT_NAME}; ha: ha)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=None,
        metavar="N",
        help=f"first of three ports (default: the stack's existing ports, else {DEFAULT_PORT_BASE})",
    )
    # --name/--port-base are also accepted after the command (`devstack up --name x`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--port-base", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", parents=[common], help="start everything that is not running; print env")
    sub.add_parser("down", parents=[common], help="stop everything and remove all data")
    st = sub.add_parser("status", parents=[common], help="one line per node; exit 1 if any node is down")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    sub.add_parser("env", parents=[common], help="print shell-sourceable KEY=value lines")
    for cmd, text in NODE_COMMANDS.items():
        p = sub.add_parser(cmd, parents=[common], help=text)
        if cmd == "stop":
            p.add_argument("node", choices=NODES, metavar="NODE", nargs="?", help="every node when omitted (data kept)")
        else:
            p.add_argument("node", choices=NODES, metavar="NODE", help=" | ".join(NODES))
    sl = sub.add_parser(
        "slow",
        parents=[common],
        help="CPU-starve a node: SIGSTOP it (all its processes) for DUTY of every PERIOD, until `resume NODE`",
    )
    sl.add_argument("node", choices=NODES, metavar="NODE", help=" | ".join(NODES))
    sl.add_argument("--duty", type=float, default=0.8, help="stopped share of each period, 0-1 (default: 0.8)")
    sl.add_argument("--period", type=float, default=0.1, help="seconds per stop/continue cycle (default: 0.1)")
    sub.add_parser("promote", parents=[common], help="promote the replica to primary")
    d = sub.add_parser("delay", parents=[common], help="set recovery_min_apply_delay on the replica (0 removes it)")
    d.add_argument("seconds", type=float, metavar="SECONDS")
    _add_pools_parser(sub, common)
    from .ha import add_parser as add_ha_parser

    add_ha_parser(sub, common)
    return parser


def _add_pools_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``pools ACTION``: split gunicorn pools per traffic class behind HAProxy (:mod:`devstack.pools`)."""
    pools = sub.add_parser(
        "pools",
        parents=[common],
        help="gunicorn pools per traffic class behind HAProxy, against this stack (up/down/status/kill/start)",
        description="Split pools: SERVING_POOL=<class> gunicorn members behind one HAProxy, on loopback.",
    )
    actions = pools.add_subparsers(dest="pools_command", required=True, metavar="ACTION")
    up = actions.add_parser("up", parents=[common], help="start the members and haproxy; wait until all are UP")
    up.add_argument("--members", type=int, default=2, metavar="N", help="members per pool, 1-9 (default: 2)")
    up.add_argument(
        "--classes",
        default=None,
        metavar="LIST",
        help="pools, CLASS or CLASS:N, comma-separated (default: every class but ops, whose requests every member "
        "answers unless ops gets a pool of its own)",
    )
    up.add_argument("--port", type=int, default=8000, metavar="P", help="HAProxy's port (default: 8000)")
    up.add_argument("--base-port", type=int, default=None, metavar="Q", help="stats on Q, members from Q+1 (P+100)")
    up.add_argument("--workers", type=int, default=1, metavar="W", help="WEB_CONCURRENCY of each member (default: 1)")
    actions.add_parser("down", parents=[common], help="stop every member and haproxy (SIGTERM, then SIGKILL)")
    st = actions.add_parser("status", parents=[common], help="each process and its health; exit 1 if one is down")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    for action, text in (
        ("kill", "SIGKILL a member (catalog-2), a whole pool (catalog) or haproxy, with its process group: a crash"),
        ("start", "start what TARGET names that is not running; wait until HAProxy reports it UP"),
    ):
        p = actions.add_parser(action, parents=[common], help=text)
        p.add_argument("target", metavar="TARGET", help="a member (catalog-2), a pool (catalog) or haproxy")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cmd = args.command
        if cmd == "ha":
            from . import ha

            return ha.main(args)
        stack = Stack(name=args.name or DEFAULT_NAME, port_base=args.port_base)
        if cmd == "up":
            sys.stdout.write(Stack.format_env(stack.up()))
        elif cmd == "down":
            stack.down()
        elif cmd == "status":
            status = stack.status()
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                print(Stack.format_status(status))
            return 0 if all(s["running"] for s in status.values()) else 1
        elif cmd == "env":
            sys.stdout.write(Stack.format_env(stack.env(check=True)))
        elif cmd == "promote":
            stack.promote()
        elif cmd == "delay":
            stack.set_apply_delay(args.seconds)
        elif cmd == "pools":
            from . import pools  # imports resilience (the renderer): only for this command

            return pools.main(stack, args)
        elif cmd == "slow":
            stack.slow(args.node, args.duty, args.period)
        elif cmd == "stop" and args.node is None:
            stack.stop_all()
        else:
            getattr(stack, cmd)(args.node)
            if cmd in ("kill", "hang", "resume"):
                print(f"devstack: [{stack.name}] {cmd}: {args.node}", file=sys.stderr)
        return 0
    except DevstackError as e:
        print(f"devstack: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("devstack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
