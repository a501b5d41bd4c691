"""Failure drills on the topology: ``kill``, ``hang``, ``resume``, ``switchover`` -- each waits for the outcome.

Targets name a role, resolved when the command runs (``leader`` is whoever leads now), or a process:

* ``leader``: the leader's whole host -- SIGKILL its Patroni's process group and its postmaster's (PostgreSQL
  runs in a session of its own) together; waits for a new leader and a committed write through HAProxy.
* ``leader-patroni``: the leader's Patroni alone. Its PostgreSQL keeps running and accepting writes on its own
  port (split brain); HAProxy's ``GET /primary`` check fails with the REST API, so ``primary`` stops routing
  there and cuts its sessions. Waits as for ``leader``; ``start`` brings Patroni back, which demotes and rewinds.
* ``leader-postgres`` (``hang`` only): the leader's postmaster and all its backends.
* ``replica``: one replica's host (the synchronous standby when there is one: the interesting case).
* ``redis-master`` / ``redis-replica``: as the Sentinels name them; a killed master waits for the Sentinels to
  name the other node. ``app`` is app-1. Any process name (pg2, sentinel-3, redis-1, etcd, haproxy, app-2) works.

``hang`` SIGSTOPs (the postmaster with every descendant, Patroni's group) and records each ``(pid, start
time)`` in ha.json; ``resume`` SIGCONTs exactly those and waits until every running Patroni node is a leader
or a streaming replica again. ``kill``/``hang`` are not undone by anything but ``start``/``resume`` (or ``up``).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from ..procs import DevstackError, continue_procs, descendants, send, stop_tree
from . import haproxy_admin, patroni, sentinel
from .cluster import Cluster
from .engines import WAIT_TIMEOUT, wait_for
from .process import group_members, group_signal, running, wait_gone
from .topology import APPS, PG_NODES, PROCESSES, REDIS_NODES, SENTINELS

ROLE_TARGETS = ("leader", "leader-patroni", "leader-postgres", "replica", "redis-master", "redis-replica", "app")
GROUPS = {"pg": PG_NODES, "redis": REDIS_NODES, "sentinels": SENTINELS, "apps": APPS}


def resolve(cluster: Cluster, state: dict[str, Any], target: str) -> tuple[str, str]:
    """(process, part): part is 'host' (Patroni + PostgreSQL), 'patroni', 'postgres' or 'process'."""
    if target in PROCESSES:
        return target, "host" if target in PG_NODES else "process"
    if target in ("leader", "leader-patroni", "leader-postgres", "replica"):
        members = cluster.members()
        leader = patroni.leader_of(members)
        if leader is None:
            raise DevstackError(f"topology '{cluster.name}' has no leader now, so there is no {target} to pick.")
        if target == "replica":
            replicas = [
                n
                for n in PG_NODES
                if n != leader and n in (members or {}) and (members or {})[n].get("state") in ("running", "streaming")
            ]
            if not replicas:
                raise DevstackError(f"topology '{cluster.name}' has no running replica.")
            sync = [n for n in replicas if members[n].get("role") == "sync_standby"]  # type: ignore[index]
            return (sync or replicas)[0], "host"
        part = {"leader": "host", "leader-patroni": "patroni", "leader-postgres": "postgres"}[target]
        return leader, part
    if target in ("redis-master", "redis-replica"):
        master = cluster.redis_master()
        node = cluster.redis_node(master)
        if node is None:
            raise DevstackError("no Sentinel answers, so there is no Redis master to pick.")
        if target == "redis-replica":
            node = next(n for n in REDIS_NODES if n != node)
        return node, "process"
    if target == "app":
        return "app-1", "process"
    raise DevstackError(
        f"unknown target {target!r}: use one of {', '.join(ROLE_TARGETS)} or a process ({', '.join(PROCESSES)})."
    )


def _roots(cluster: Cluster, state: dict[str, Any], process: str, part: str) -> list[tuple[str, int]]:
    """(what, pid) of the process group leaders the target consists of (only those running)."""
    roots = []
    if part in ("host", "patroni", "process"):
        pid = cluster.pid(state, process)
        if pid:
            roots.append((f"{process} Patroni" if process in PG_NODES else process, pid))
    if part in ("host", "postgres"):
        pid = cluster.postmaster(process)
        if pid:
            roots.append((f"{process} PostgreSQL", pid))
    return roots


def kill(cluster: Cluster, target: str) -> None:
    with cluster.locked():
        state = cluster.require()
        process, part = resolve(cluster, state, target)
        was_leader = process in PG_NODES and cluster.leader() == process
        old_master = cluster.redis_master()
        roots = _roots(cluster, state, process, part)
        if not roots:
            cluster.note(f"{process} is not running")
            return
        # PostgreSQL's children each call setsid(): the postmaster's process group is the postmaster alone, so
        # its descendants are collected from /proc (stopped first so none forks while we collect).
        for _what, pid in roots:
            group_signal(pid, signal.SIGSTOP)
        pids = []
        for _what, pid in roots:
            pids += group_members(pid) or [pid]
            pids += [d.pid for d in descendants(pid)]
        t0 = time.monotonic()
        for _what, pid in roots:
            group_signal(pid, signal.SIGKILL)
        for pid in pids:
            send(pid, signal.SIGKILL)
        wait_gone(pids, 10)
        cluster.note(f"killed {' and '.join(what for what, _ in roots)} (SIGKILL, whole process groups)")
        _await_outcome(cluster, state, process, part, was_leader, old_master, t0)


def _await_outcome(
    cluster: Cluster,
    state: dict[str, Any],
    process: str,
    part: str,
    was_leader: bool,
    old_master: int | None,
    t0: float,
) -> None:
    topo = cluster.topo
    if process in PG_NODES and was_leader and part in ("host", "patroni"):
        if part == "patroni":
            wait_for(
                f"HAProxy taking {process} out of 'primary'",
                lambda: not haproxy_admin.servers(topo.admin_socket).get(("primary", process), "").startswith("UP"),
                15,
                0.1,
            )
            cluster.note(f"HAProxy marked {process} DOWN in 'primary' after {time.monotonic() - t0:.1f} s")
        leader = cluster.wait_leader(WAIT_TIMEOUT, not_=process)
        cluster.note(f"new leader {leader} after {time.monotonic() - t0:.1f} s")
        cluster.wait_writes(state)
        cluster.note(f"writes through HAProxy's primary port resume after {time.monotonic() - t0:.1f} s")
    elif process in PG_NODES:
        leader = cluster.leader()

        def gone() -> bool:
            now = cluster.leader()
            return bool(now) and process not in patroni.streaming_replicas(topo.rest_port(now))

        if leader and leader != process:
            wait_for(f"the leader dropping {process}'s stream", gone, 30, 0.2)
            cluster.note(f"{process} no longer streams from {leader} after {time.monotonic() - t0:.1f} s")
    elif process in REDIS_NODES and old_master == topo.redis_port(process):
        other = next(n for n in REDIS_NODES if n != process)
        port = topo.redis_port(other)

        def promoted() -> bool:
            info = sentinel.replication(port)
            return cluster.redis_master() == port and bool(info) and info.get("role") == "master"

        wait_for(f"the Sentinels promoting {other}", promoted, 30, 0.1)
        cluster.note(f"the Sentinels name {other} master after {time.monotonic() - t0:.1f} s")
    elif process in APPS:
        wait_for(
            f"HAProxy marking {process} DOWN",
            lambda: haproxy_admin.servers(topo.admin_socket).get(("app", process), "DOWN").startswith("DOWN"),
            15,
            0.1,
        )
        cluster.note(f"HAProxy marked {process} DOWN after {time.monotonic() - t0:.1f} s")


def start(cluster: Cluster, target: str | None) -> None:
    """Start what is not running (everything, a group: pg, redis, sentinels, apps, or one process); wait for it."""
    t0 = time.monotonic()
    with cluster.locked():
        state = cluster.require()
        if target is None:
            names = None
        elif target in GROUPS:
            names = list(GROUPS[target])
        elif target in PROCESSES:
            names = [target]
        else:
            raise DevstackError(
                f"unknown process {target!r}: use one of {', '.join(PROCESSES)} or a group ({', '.join(GROUPS)})."
            )
        if names and any(n in APPS for n in names) and not state["app"]:
            state["app"] = True  # asked for by name: the app hosts are part of the topology from now on
            cluster.save(state)
        rejoining = [n for n in (names or PG_NODES) if n in PG_NODES and not cluster.is_running(state, n)]
        cluster.up(only=names)
        if rejoining:
            cluster.note(f"{', '.join(rejoining)} streaming again after {time.monotonic() - t0:.1f} s")


def hang(cluster: Cluster, target: str) -> None:
    with cluster.locked():
        state = cluster.require()
        process, part = resolve(cluster, state, target)
        was_leader = process in PG_NODES and cluster.leader() == process
        old_master = cluster.redis_master()
        roots = _roots(cluster, state, process, part)
        if not roots:
            raise DevstackError(f"{process} is not running, so it cannot be hung.")
        t0 = time.monotonic()
        for what, pid in roots:
            pairs = stop_tree(pid)
            for member in group_members(pid):
                if member not in {p for p, _ in pairs}:
                    pairs += stop_tree(member)
            state["hung"].append({"what": what, "pairs": pairs})
        cluster.save(state)
        cluster.note(f"hung {' and '.join(what for what, _ in roots)} (SIGSTOP); `resume` continues them")
        if part != "postgres":
            _await_outcome(cluster, state, process, "host" if part == "host" else part, was_leader, old_master, t0)


def resume_all(cluster: Cluster, state: dict[str, Any]) -> int:
    n = 0
    for entry in state.get("hung", []):
        n += continue_procs([tuple(pair) for pair in entry["pairs"]])  # type: ignore[misc]
    state["hung"] = []
    cluster.save(state)
    return n


def resume(cluster: Cluster) -> None:
    with cluster.locked():
        state = cluster.require()
        what = [entry["what"] for entry in state.get("hung", [])]
        if not what:
            cluster.note("nothing is hung")
            return
        t0 = time.monotonic()
        resume_all(cluster, state)
        cluster.note(f"resumed {', '.join(what)} (SIGCONT)")
        if any(w.split()[0] in PG_NODES for w in what):
            wait_settled(cluster, state)
            seconds = time.monotonic() - t0
            cluster.note(f"every running Patroni node leads or streams again (HAProxy routes) after {seconds:.1f} s")
        if any(w in REDIS_NODES for w in what):
            wait_redis_settled(cluster, state)
            cluster.note(f"one Redis master, the other its replica again after {time.monotonic() - t0:.1f} s")


def wait_redis_settled(cluster: Cluster, state: dict[str, Any], timeout: float = 30.0) -> None:
    """The Sentinels' master is the only master; every other running node replicates from it with its link up."""

    def ok() -> bool:
        master = cluster.redis_master()
        if master is None:
            return False
        for node in REDIS_NODES:
            if not cluster.is_running(state, node):
                continue
            info = sentinel.replication(cluster.topo.redis_port(node)) or {}
            if cluster.topo.redis_port(node) == master:
                if info.get("role") != "master":
                    return False
            elif info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
        return True

    wait_for("the Redis pair settling (one master, one replica in sync)", ok, timeout, 0.2)


def wait_settled(cluster: Cluster, state: dict[str, Any], timeout: float = WAIT_TIMEOUT, hold: float = 5.0) -> None:
    """One leader and every other running node streaming from it, unchanged for ``hold`` s (two Patroni loops and
    more: a resumed Patroni may still act on its stale view), and HAProxy routing to them."""
    topo = cluster.topo
    nodes = [n for n in PG_NODES if cluster.is_running(state, n)]
    deadline = time.monotonic() + timeout
    since: float | None = None
    seen: tuple[str | None, frozenset[str]] = (None, frozenset())
    while True:
        leader = cluster.leader()
        streaming = frozenset(patroni.streaming_replicas(topo.rest_port(leader))) if leader else frozenset()
        good = leader is not None and all(n in streaming for n in nodes if n != leader)
        now = time.monotonic()
        if good and (leader, streaming) == seen and since is not None:
            if now - since >= hold:
                break
        elif good:
            since, seen = now, (leader, streaming)
        else:
            since = None
        if now >= deadline:
            stuck = [n for n in nodes if n != leader and n not in streaming]
            raise DevstackError(
                f"after {timeout:.0f} s the cluster has not settled: leader {leader or 'none'}, not streaming: "
                f"{', '.join(stuck) or '-'}. A node whose timeline forked off the leader's (see its log: 'highest "
                "timeline ... of the primary is behind recovery timeline') needs `python -m devstack ha reinit "
                "NODE`. With Patroni 3.0.2 and etcd3 a resumed hung leader's Patroni can take the leader key back "
                "from the node promoted meanwhile (patroni/patroni#2689, fixed in 3.0.3)."
            )
        time.sleep(0.25)
    if cluster.is_running(state, "haproxy"):
        cluster.wait_db_routing()


def reinit(cluster: Cluster, node: str) -> None:
    """Patroni's reinitialize: wipe ``node``'s data and clone the leader again (pg_basebackup); wait for it."""
    if node not in PG_NODES:
        raise DevstackError(f"reinit takes a Patroni node: {', '.join(PG_NODES)}.")
    with cluster.locked():
        cluster.require()
        leader = cluster.leader()
        if node == leader:
            raise DevstackError(f"{node} is the leader; reinit rebuilds a replica from the leader.")
        t0 = time.monotonic()
        status, reply = patroni.rest(
            cluster.topo.rest_port(node), "/reinitialize", method="POST", body={"force": True}, timeout=30
        )
        if status != 200:
            raise DevstackError(f"Patroni refused to reinitialize {node}: {status} {reply}")
        cluster.note(f"{node}: reinitialize accepted")
        time.sleep(1)
        cluster.wait_streaming([node], WAIT_TIMEOUT)
        cluster.note(f"{node} streams from {cluster.leader()} again after {time.monotonic() - t0:.1f} s")


def switchover(cluster: Cluster, candidate: str | None) -> None:
    with cluster.locked():
        state = cluster.require()
        members = cluster.members() or {}
        leader = patroni.leader_of(members)
        if leader is None:
            raise DevstackError(f"topology '{cluster.name}' has no leader to switch over from.")
        if candidate is None:
            replicas = [n for n in PG_NODES if n != leader and members.get(n, {}).get("role") == "sync_standby"]
            replicas += [n for n in PG_NODES if n != leader and n in members and n not in replicas]
            if not replicas:
                raise DevstackError("there is no replica to switch over to.")
            candidate = replicas[0]
        if candidate not in PG_NODES or candidate == leader:
            raise DevstackError(f"--candidate must be a replica ({', '.join(n for n in PG_NODES if n != leader)}).")
        t0 = time.monotonic()
        status, reply = patroni.rest(
            cluster.topo.rest_port(leader),
            "/switchover",
            method="POST",
            body={"leader": leader, "candidate": candidate},
            timeout=30,
        )
        if status != 200:
            raise DevstackError(f"Patroni refused the switchover {leader} -> {candidate}: {status} {reply}")
        cluster.note(f"switchover {leader} -> {candidate} accepted")
        wait_for(f"{candidate} leading", lambda: cluster.leader() == candidate, WAIT_TIMEOUT, 0.2)
        cluster.wait_writes(state)
        cluster.note(f"{candidate} takes writes through HAProxy after {time.monotonic() - t0:.1f} s")
        cluster.wait_streaming([leader], WAIT_TIMEOUT)
        cluster.note(f"{leader} streams from {candidate} after {time.monotonic() - t0:.1f} s")


def alive_pairs(state: dict[str, Any]) -> list[str]:
    return [p for p in PROCESSES if running(state["procs"].get(p))]
