"""System tests for ``python -m devstack ha``: the scale-out topology with the real engines, on loopback.

One topology for the module (``up --no-app``: etcd, three Patroni/PostgreSQL nodes, Redis master + replica, three
Sentinels, HAProxy), driven through the command line as an operator would. The tests run in file order: the
failover drills leave the cluster healthy again (``start``), and the last one takes it ``down`` and checks
nothing is left. Port base 62500 (62500-62561): between the system tests' fixed bases (62400-62490, 62600-62840),
above the kernel's ephemeral range. The measured times (bootstrap, failover, rejoin) are printed (``-s``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.ha.cluster import Cluster
from devstack.ha.topology import PG_NODES, PROCESSES, SPAN
from devstack.procs import alive, port_in_use

pytestmark = [
    pytest.mark.system,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in ("patroni", "etcd", "redis-sentinel")),
        reason="needs Debian's patroni, etcd-server, redis-sentinel and haproxy (scripts/bootstrap.sh)",
    ),
]

NAME = "pytest-ha"
PORT_BASE = 62500
ROOT = Path(__file__).resolve().parents[2]


def ha(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devstack", "ha", "--name", NAME, "--port-base", str(PORT_BASE), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"$ devstack ha {' '.join(args)} -> {proc.returncode}\n{proc.stderr}", end="")
    if check and proc.returncode != 0:
        raise AssertionError(f"devstack ha {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}")
    return proc


def parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def status() -> dict:
    import json

    return json.loads(ha("status", "--json", check=False).stdout)


def poll(what: str, check, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def topology() -> Iterator[dict[str, str]]:
    ha("down")  # what an interrupted earlier run left
    t0 = time.monotonic()
    proc = ha("up", "--no-app", timeout=240)
    print(f"bootstrap (up --no-app from nothing): {time.monotonic() - t0:.1f} s")
    try:
        yield parse_env(proc.stdout)
    finally:
        ha("down", check=False)


def write(url: str, value: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ha_t (v text)")
        conn.execute("INSERT INTO ha_t VALUES (%s)", (value,))


def read_back(url: str, value: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), count(*) FROM ha_t WHERE v = %s", (value,)).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0] and row[1] == 1)


def test_up_gives_one_leader_two_streaming_replicas_redis_pair_and_sentinels(topology: dict[str, str]) -> None:
    s = status()
    assert s["healthy"], s["problems"]
    procs = s["processes"]
    roles = sorted(procs[n]["role"] for n in PG_NODES)
    assert roles == ["leader", "replica", "sync_standby"]
    assert all(procs[n]["streaming"] for n in PG_NODES if n != s["leader"])
    assert sorted(procs[n]["role"] for n in ("redis-1", "redis-2")) == ["master", "slave"]
    assert all(procs[n]["running"] and procs[n]["master"] == s["redis_master"] for n in ("sentinel-1", "sentinel-2"))
    assert procs["sentinel-3"]["master"] == s["redis_master"]
    assert procs["haproxy"]["running"] and not procs["app-1"]["running"]


def test_env_parses_and_haproxy_routes_writes_and_reads(topology: dict[str, str]) -> None:
    env = parse_env(ha("env").stdout)
    assert env == topology
    assert env["DATABASE_URL"].endswith(
        f"@127.0.0.1:{PORT_BASE}/bulwark?connect_timeout=2&target_session_attrs=read-write"
    )
    assert env["DATABASE_REPLICA_URLS"].endswith(f"@127.0.0.1:{PORT_BASE + 1}/bulwark")
    assert env["REDIS_SENTINELS"] == ",".join(f"127.0.0.1:{PORT_BASE + 50 + i}" for i in range(3))
    assert env["REDIS_SENTINEL_MASTER"] == "bulwark"
    assert "REDIS_URL" not in env
    write(env["DATABASE_URL"], "first")
    poll("the row through the replicas port", lambda: read_back(env["DATABASE_REPLICA_URLS"], "first"), 10)


def test_up_twice_is_harmless(topology: dict[str, str]) -> None:
    before = {n: p["pid"] for n, p in status()["processes"].items()}
    proc = ha("up", "--no-app")
    assert "already running" in proc.stderr
    assert parse_env(proc.stdout) == topology
    assert {n: p["pid"] for n, p in status()["processes"].items()} == before


def test_kill_leader_fails_over_and_start_rejoins_it_as_a_replica(topology: dict[str, str]) -> None:
    old = status()["leader"]
    t0 = time.monotonic()
    ha("kill", "leader")
    failover = time.monotonic() - t0
    s = status()
    assert s["leader"] not in (None, old)
    assert failover < 30, f"failover took {failover:.1f} s"
    write(topology["DATABASE_URL"], "after-failover")  # the same URL: HAProxy follows the new leader
    t0 = time.monotonic()
    ha("start")
    rejoin = time.monotonic() - t0
    s = status()
    assert s["processes"][old]["role"] in ("replica", "sync_standby")
    assert s["processes"][old]["streaming"]
    assert s["healthy"], s["problems"]
    print(f"failover (kill leader -> writes through HAProxy): {failover:.1f} s; rejoin (start): {rejoin:.1f} s")


def test_kill_leader_patroni_keeps_haproxy_off_the_split_brain_primary(topology: dict[str, str]) -> None:
    old = status()["leader"]
    ha("kill", "leader-patroni")
    s = status()
    assert s["leader"] not in (None, old)
    assert s["processes"][old]["postgres_pid"], "the old leader's PostgreSQL keeps running"
    direct = topology["DATABASE_URL"].replace(f":{PORT_BASE}/", f":{PORT_BASE + 10 + PG_NODES.index(old)}/")
    with psycopg.connect(direct, autocommit=True) as conn:
        # Split brain: it still runs as a primary on its own port, but synchronous_mode keeps its standby list, whose
        # standbys now follow the new leader, so a commit there would wait forever, never be acknowledged.
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("SHOW synchronous_standby_names").fetchone()[0] not in ("", None)
    with psycopg.connect(topology["DATABASE_URL"], autocommit=True) as conn:  # HAProxy: the new leader only
        port = conn.execute("SELECT inet_server_port()").fetchone()[0]
        assert port == PORT_BASE + 10 + PG_NODES.index(s["leader"])
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    ha("start")
    s = status()
    assert s["processes"][old]["role"] in ("replica", "sync_standby") and s["processes"][old]["streaming"]
    assert s["healthy"], s["problems"]


def test_kill_redis_master_lets_the_sentinels_promote_the_replica(topology: dict[str, str]) -> None:
    old = status()["redis_master"]
    t0 = time.monotonic()
    ha("kill", "redis-master")
    s = status()
    assert s["redis_master"] not in (None, old)
    assert s["processes"][s["redis_master"]]["role"] == "master"
    print(f"redis failover: {time.monotonic() - t0:.1f} s")
    ha("start")
    s = status()
    assert s["processes"][old]["role"] == "slave" and s["processes"][old]["link"] == "up"
    assert s["healthy"], s["problems"]


def test_down_leaves_no_process_and_frees_every_port(topology: dict[str, str]) -> None:
    cluster = Cluster(NAME, PORT_BASE)
    state = cluster.require()
    pids = [int(state["procs"][p]["pid"]) for p in PROCESSES if p in state["procs"]]
    postmasters = [pid for node in PG_NODES if (pid := cluster.postmaster(node))]
    ha("down")
    assert not any(alive(pid) for pid in pids + postmasters)
    assert not cluster.topo.run_dir.exists()
    assert not cluster.topo.state_file.exists()
    busy = [port for port in range(PORT_BASE, PORT_BASE + SPAN) if port_in_use(port)]
    assert not busy
    assert "nothing to take down" in ha("down").stderr
