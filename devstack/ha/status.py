"""``ha status``: one line per process, what each one's own interface says, and whether the whole is healthy.

Sources: ha.json's pids (is the process we started alive? stopped by ``hang``?), Patroni's ``GET /cluster``
(role leader / sync_standby / replica, state, timeline, lag), the leader's ``GET /patroni`` (who really streams),
each Sentinel's ``get-master-addr-by-name``, each Redis node's ``INFO replication``, HAProxy's admin socket (each
backend server UP/DOWN) and the app hosts' ``/health/live``.

Healthy (exit status 0) means: exactly one leader; every process the topology runs (the app hosts only if it was
started with them) alive and not hung; both replicas streaming; all three Sentinels naming the same master,
which says it is master. Anything else exits 1 and is listed under ``problems``.
"""

from __future__ import annotations

import http.client
from typing import Any

from ..procs import LOOPBACK, stopped
from . import haproxy_admin, patroni, sentinel
from .cluster import Cluster
from .topology import APPS, PG_NODES, PROCESSES, REDIS_NODES, SENTINELS


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=1)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def gather(cluster: Cluster) -> dict[str, Any]:
    state = cluster.require()
    topo = cluster.topo
    members = cluster.members() or {}
    leader = patroni.leader_of(members)
    failsafe = False
    if leader is None:
        # The DCS is away (etcd down): failsafe_mode keeps the primary; Patroni's /primary still says who it is.
        leader = next((n for n in PG_NODES if patroni.rest(topo.rest_port(n), "/primary")[0] == 200), None)
        failsafe = leader is not None
    streaming = patroni.streaming_replicas(topo.rest_port(leader)) if leader else {}
    servers = haproxy_admin.servers(topo.admin_socket) if cluster.is_running(state, "haproxy") else {}
    master_votes = {node: sentinel.sentinel_master(topo.sentinel_port(node)) for node in SENTINELS}
    procs: dict[str, dict[str, Any]] = {}
    for process in PROCESSES:
        pid = cluster.pid(state, process)
        info: dict[str, Any] = {
            "running": pid is not None,
            "hung": bool(pid and stopped(pid)),
            "pid": pid,
            "ports": topo.ports(process),
            "log": str(topo.log(process)),
        }
        if process in PG_NODES:
            member = members.get(process, {})
            postmaster = cluster.postmaster(process)
            info.update(
                postgres_pid=postmaster,
                postgres_hung=bool(postmaster and stopped(postmaster)),
                role=member.get("role"),
                state=member.get("state"),
                timeline=member.get("timeline"),
                lag=member.get("lag"),
                streaming=process in streaming,
                sync_state=streaming.get(process),
                haproxy={b: servers.get((b, process)) for b in ("primary", "replicas") if (b, process) in servers},
            )
        elif process in REDIS_NODES:
            repl = sentinel.replication(topo.redis_port(process)) if pid else None
            info.update(
                role=(repl or {}).get("role"),
                link=(repl or {}).get("master_link_status"),
                sentinel_master=cluster.redis_node(_majority(master_votes)) == process,
            )
        elif process in SENTINELS:
            info.update(master=cluster.redis_node(master_votes.get(process)))
        elif process in APPS:
            info.update(
                live=bool(pid) and _answers(topo.app_member_port(process), "/health/live"),
                haproxy=servers.get(("app", process)),
            )
        procs[process] = info
    problems = _problems(state, procs, leader, master_votes, cluster)
    return {
        "name": cluster.name,
        "port_base": topo.port_base,
        "leader": leader,
        "failsafe": failsafe,
        "redis_master": cluster.redis_node(_majority(master_votes)),
        "app": state["app"],
        "healthy": not problems,
        "problems": problems,
        "processes": procs,
        "env": cluster.env(state),
    }


def _majority(votes: dict[str, int | None]) -> int | None:
    counts: dict[int, int] = {}
    for port in votes.values():
        if port is not None:
            counts[port] = counts.get(port, 0) + 1
    return max(counts, key=lambda p: counts[p]) if counts else None


def _problems(
    state: dict[str, Any],
    procs: dict[str, dict[str, Any]],
    leader: str | None,
    votes: dict[str, int | None],
    cluster: Cluster,
) -> list[str]:
    problems = []
    if leader is None:
        problems.append("no Patroni leader")
    for process, info in procs.items():
        if process in APPS and not state["app"]:
            continue
        if not info["running"]:
            problems.append(f"{process} is not running")
        elif info["hung"] or info.get("postgres_hung"):
            problems.append(f"{process} is hung")
    for node in PG_NODES:
        if leader and node != leader and procs[node]["running"] and not procs[node]["streaming"]:
            problems.append(f"{node} does not stream from {leader}")
    named = {port for port in votes.values() if port is not None}
    if len(named) > 1:
        problems.append(f"the Sentinels disagree on the master ({', '.join(map(str, sorted(named)))})")
    master = cluster.redis_node(_majority(votes))
    if master and procs[master].get("role") != "master":
        problems.append(f"{master}, the Sentinels' master, is not a master")
    for node in REDIS_NODES:
        if node != master and procs[node]["running"]:
            if procs[node].get("role") == "master":
                problems.append(f"{node} also says it is a master (a Sentinel converts it shortly)")
            elif procs[node].get("link") != "up":
                problems.append(f"{node}'s replication link is {procs[node].get('link') or 'unknown'}")
    if leader and procs["haproxy"]["running"]:
        routed = procs[leader].get("haproxy", {}).get("primary") or ""
        if not routed.startswith("UP"):
            problems.append(f"HAProxy's primary backend does not have the leader {leader} UP ({routed or '?'})")
    return problems


def format_status(status: dict[str, Any]) -> str:
    lines = []
    for process, info in status["processes"].items():
        if process in APPS and not status["app"] and not info["running"]:
            lines.append(f"{process:<11} -     not started (up --no-app)")
            continue
        word = "hung" if info["hung"] else "up" if info["running"] else "DOWN"
        ports = "/".join(map(str, info["ports"]))
        detail = ""
        if process in PG_NODES:
            pg = "hung" if info["postgres_hung"] else "up" if info["postgres_pid"] else "DOWN"
            lag = info["lag"] if info["lag"] not in (None, "") else "-"
            checks = " ".join(f"{b}:{s}" for b, s in info["haproxy"].items()) or "-"
            detail = (
                f"postgres {pg:<4} role {info['role'] or '-':<12} tl {info['timeline'] or '-'} lag {lag} "
                f"{'streaming' if info['streaming'] else ''} haproxy {checks}"
            )
        elif process in REDIS_NODES:
            master = " (sentinels' master)" if info["sentinel_master"] else ""
            link = f" link {info['link']}" if info["link"] else ""
            detail = f"role {info['role'] or '-'}{link}{master}"
        elif process in SENTINELS:
            detail = f"master {info['master'] or '-'}"
        elif process in APPS:
            detail = f"live {'yes' if info['live'] else 'no'} haproxy {info['haproxy'] or '-'}"
        elif process == "haproxy":
            detail = f"app {status['env']['BULWARK_HA_APP_URL']}  stats {status['env']['DEVSTACK_HA_STATS_URL']}"
        tail = f"pid {info['pid']}" if info["running"] else f"log {info['log']}"
        lines.append(f"{process:<11} {word:<5} {ports:<12} {detail}  {tail}".rstrip())
    failsafe = " (failsafe: no DCS)" if status["failsafe"] else ""
    lines.append(
        f"leader {status['leader'] or 'NONE'}{failsafe}; redis master {status['redis_master'] or 'NONE'}; "
        + ("healthy" if status["healthy"] else "problems: " + "; ".join(status["problems"]))
    )
    return "\n".join(lines)
