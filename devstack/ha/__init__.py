"""``python -m devstack ha ACTION``: a scale-out topology on loopback with the real engines.

etcd (one member: a development shortcut, production runs 3 or 5), three Patroni nodes managing PostgreSQL 15
(one leader, two streaming replicas, synchronous mode), Redis master + replica under three Sentinels, one
HAProxy (``primary`` and ``replicas`` TCP frontends checked against Patroni's REST API, an ``app`` HTTP frontend)
and two Bulwark hosts (gunicorn). Ports are ``--port-base N`` + a fixed layout (:mod:`devstack.ha.topology`,
default N = 64000); the configurations are the reference templates under ``deploy/`` (:mod:`devstack.ha.render`).

Actions::

    up [--no-app] [--workers W]   start what is not running, wait until it serves; print `env` (harmless twice)
    down                          stop everything, remove every file: no process left, every port free
    status [--json]               one line per process; exit 1 unless healthy (see devstack.ha.status)
    env                           KEY=value lines for the app (shell-sourceable)
    kill TARGET                   SIGKILL: leader, leader-patroni, replica, redis-master, app, etcd or a process
    start [TARGET]                start what is not running (everything, or a process / group); wait for it
    hang TARGET / resume          SIGSTOP (leader = its Patroni and its postmaster family) / SIGCONT
    reinit NODE                   rebuild a replica from the leader (a node whose timeline forked off)
    switchover [--candidate N]    Patroni's planned switchover; waits for writes through HAProxy

Every action that changes the cluster waits for the state it should reach (with a timeout) and says how long it
took on stderr; machine-readable output goes to stdout. As root, Patroni and PostgreSQL run as ``postgres``
with a clean environment (a caller's PGPASSWORD would override the node's pgpass and break pg_rewind).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .topology import DEFAULT_NAME, DEFAULT_PORT_BASE, PROCESSES


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ha = sub.add_parser(
        "ha",
        parents=[common],
        help="scale-out topology: etcd, 3 Patroni/PostgreSQL, Redis + 3 Sentinels, HAProxy, 2 app hosts",
        description=(
            f"A scale-out topology on 127.0.0.1 (default name {DEFAULT_NAME}, port base {DEFAULT_PORT_BASE}; "
            "layout in devstack/ha/topology.py)."
        ),
    )
    actions = ha.add_subparsers(dest="ha_command", required=True, metavar="ACTION")
    up = actions.add_parser("up", parents=[common], help="start what is not running; wait until it serves")
    up.add_argument("--no-app", action="store_true", help="no Bulwark hosts (tests and drills start their own)")
    up.add_argument("--workers", type=int, default=None, metavar="W", help="WEB_CONCURRENCY of each app host (1)")
    actions.add_parser("down", parents=[common], help="stop everything and remove all data")
    st = actions.add_parser("status", parents=[common], help="one line per process; exit 1 unless healthy")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    actions.add_parser("env", parents=[common], help="print shell-sourceable KEY=value lines")
    targets = "leader | leader-patroni | replica | redis-master | redis-replica | app | " + " | ".join(PROCESSES)
    kill = actions.add_parser("kill", parents=[common], help="SIGKILL a role's or a process's process groups")
    kill.add_argument("target", metavar="TARGET", help=targets)
    start = actions.add_parser("start", parents=[common], help="start what is not running; wait for it")
    start.add_argument("target", metavar="TARGET", nargs="?", help="a process or pg | redis | sentinels | apps")
    hang = actions.add_parser("hang", parents=[common], help="SIGSTOP a role or a process (leader: Patroni + postgres)")
    hang.add_argument("target", metavar="TARGET", help="leader-postgres | " + targets)
    actions.add_parser("resume", parents=[common], help="SIGCONT what `hang` stopped; wait for the cluster")
    ri = actions.add_parser("reinit", parents=[common], help="rebuild a replica from the leader (Patroni reinitialize)")
    ri.add_argument("node", metavar="NODE", choices=("pg1", "pg2", "pg3"), help="pg1 | pg2 | pg3")
    sw = actions.add_parser("switchover", parents=[common], help="planned switchover to a replica")
    sw.add_argument("--candidate", default=None, metavar="NODE", help="pg1 | pg2 | pg3 (default: the sync standby)")


def main(args: Any) -> int:
    from . import drills
    from .cluster import Cluster
    from .status import format_status, gather

    cluster = Cluster(name=args.name or DEFAULT_NAME, port_base=args.port_base)
    action = args.ha_command
    if action == "up":
        sys.stdout.write(_format_env(cluster.up(app=not args.no_app, workers=args.workers)))
    elif action == "down":
        cluster.down()
    elif action == "status":
        status = gather(cluster)
        print(json.dumps(status, indent=2) if args.json else format_status(status))
        return 0 if status["healthy"] else 1
    elif action == "env":
        sys.stdout.write(_format_env(cluster.env(check=True)))
    elif action == "kill":
        drills.kill(cluster, args.target)
    elif action == "start":
        drills.start(cluster, args.target)
    elif action == "hang":
        drills.hang(cluster, args.target)
    elif action == "resume":
        drills.resume(cluster)
    elif action == "reinit":
        drills.reinit(cluster, args.node)
    elif action == "switchover":
        drills.switchover(cluster, args.candidate)
    return 0


def _format_env(env: dict[str, str]) -> str:
    from ..stack import Stack

    return Stack.format_env(env)
