"""Starting each engine of the topology and waiting until it serves: etcd, the Patroni nodes, Redis and the
Sentinels, HAProxy, the app hosts. A mixin of :class:`devstack.ha.cluster.Cluster` (which holds ha.json, the
lock, the lookups and ``up``/``down``): each ``_start_*`` renders its configuration from ``deploy/`` and spawns
the process; each ``wait_*`` polls for the state the next layer needs, with a timeout and how long it took.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..postgres import PgNode
from ..procs import LOOPBACK, DevstackError, run
from . import haproxy_admin, patroni, render, sentinel
from .topology import REDIS_NODES, SENTINELS

WAIT_TIMEOUT = 60.0
APP_START_TIMEOUT = 90.0


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2, hint: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; DevstackError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise DevstackError(f"{what} did not happen within {timeout:.0f} s.{(' ' + hint) if hint else ''}")
        time.sleep(interval)


def find_tool(tool: str) -> str | None:
    """A tool's path: $PATH, then /usr/sbin and /usr/bin (Debian puts haproxy in /usr/sbin)."""
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if Path(p).is_file()), None)


def _quietly(call: Callable[[], Any]) -> Any:
    """``call()``, or None when it raises DevstackError (a poll that may fail while a node starts)."""
    try:
        return call()
    except DevstackError:
        return None


class Engines:
    """The engines' start and wait steps (``self`` is a :class:`~devstack.ha.cluster.Cluster`)."""

    # ---- etcd -------------------------------------------------------------------------------------------------

    def _start_etcd(self, state: dict[str, Any]) -> None:
        topo = self.topo
        self._check_free("etcd", topo.ports("etcd"))
        config = topo.node_dir("etcd") / "etcd.conf.yml"
        self._write(config, render.etcd(topo, state["etcd_token"]))
        self.note(f"starting etcd (client {topo.etcd_port}, peer {topo.etcd_peer_port})")
        self._spawn(state, "etcd", [patroni.find_etcd(), "--config-file", str(config)])
        self.wait_etcd(state)

    def etcd_healthy(self) -> bool:
        status, data = patroni.rest(self.topo.etcd_port, "/health")
        return status == 200 and isinstance(data, dict) and data.get("health") == "true"

    def wait_etcd(self, state: dict[str, Any], timeout: float = 30.0) -> float:
        t0 = time.monotonic()

        def ok() -> bool:
            self._alive_or_fail(state, "etcd")
            return self.etcd_healthy()

        wait_for("etcd answering /health", ok, timeout, 0.1, f"See {self.topo.log('etcd')}.")
        return time.monotonic() - t0

    # ---- Patroni / PostgreSQL ---------------------------------------------------------------------------------

    def _start_patroni(self, state: dict[str, Any], nodes: list[str]) -> None:
        topo, user, pg = self.topo, self.pg_user, self.pg_install
        for node in nodes:
            ports = [topo.rest_port(node)] + ([] if self.postmaster(node) else [topo.pg_port(node)])
            self._check_free(node, ports)
        for node in nodes:
            base = topo.node_dir(node)
            config = base / "patroni.yml"
            self._write(config, render.patroni(topo, node, state["passwords"], pg.bindir), owner=user)
            env = {
                "PATH": f"{pg.bindir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                "HOME": str(base),
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            }
            self.note(f"starting {node} (Patroni REST {topo.rest_port(node)}, PostgreSQL {topo.pg_port(node)})")
            self._spawn(state, node, [patroni.find_patroni(), str(config)], env=env, cwd=base, as_user=user)

    def wait_leader(self, timeout: float = WAIT_TIMEOUT, not_: str | None = None) -> str:
        """Wait until a running leader (other than ``not_``) holds the lock; its name."""

        def found() -> str | None:
            leader = self.leader()
            return leader if leader and leader != not_ else None

        hint = f"See `python -m devstack ha --name {self.name} status` and the logs in {self.topo.run_dir}."
        return wait_for("a Patroni leader" + (f" other than {not_}" if not_ else ""), found, timeout, 0.2, hint)

    def wait_streaming(self, nodes: list[str], timeout: float = WAIT_TIMEOUT) -> float:
        """Wait until each of ``nodes`` streams from the leader (the leader's walsenders list it)."""
        t0 = time.monotonic()

        def ok() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            streaming = patroni.streaming_replicas(self.topo.rest_port(leader))
            return all(node in streaming for node in nodes if node != leader)

        hint = f"See the Patroni logs in {self.topo.run_dir} (pg1.log ...)."
        if nodes:
            wait_for(f"{', '.join(nodes)} streaming from the leader", ok, timeout, 0.25, hint)
        return time.monotonic() - t0

    def wait_sync_standby(self, timeout: float = 30.0) -> float:
        """synchronous_mode: wait until Patroni has named a running replica synchronous (none when none runs)."""
        t0 = time.monotonic()

        def ok() -> bool:
            members = self.members() or {}
            replicas = [m for n, m in members.items() if m.get("role") in ("replica", "sync_standby")]
            return not replicas or any(m.get("role") == "sync_standby" for m in replicas)

        wait_for("Patroni naming a synchronous standby", ok, timeout, 0.2)
        return time.monotonic() - t0

    def _bootstrap(self, state: dict[str, Any], leader: str) -> None:
        node = PgNode(self.pg_install, self.pg_user, self.topo.node_dir(leader), leader)
        sql = patroni.bootstrap_sql(state["passwords"][patroni.APP_USER])
        wait_for(
            f"{leader}'s PostgreSQL accepting the app role",
            lambda: _quietly(lambda: node.psql(self.topo.pg_port(leader), sql) or True),
            30,
            0.5,
        )
        state["bootstrapped"] = True
        self.save(state)

    def psql_through(self, port: int, sql: str, state: dict[str, Any], timeout: float = 5.0) -> str | None:
        """Run ``sql`` as the app user through HAProxy's ``port``; its output, or None when it fails."""
        password = state["passwords"][patroni.APP_USER]
        url = f"postgresql://{patroni.APP_USER}@{LOOPBACK}:{port}/{patroni.APP_DB}?connect_timeout=2"
        try:
            proc = run(
                [self.pg_install.bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                env={"PGPASSWORD": password},
                timeout=timeout,
                check=False,
            )
        except DevstackError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    def writes_ok(self, state: dict[str, Any]) -> bool:
        """Does HAProxy's primary port take a committed write (an xid: waits for the synchronous standby)?"""
        out = self.psql_through(self.topo.primary_port, "SELECT NOT pg_is_in_recovery(), txid_current()", state)
        return bool(out and out.startswith("t|"))

    def wait_writes(self, state: dict[str, Any], timeout: float = WAIT_TIMEOUT) -> float:
        t0 = time.monotonic()
        wait_for("a committed write through HAProxy's primary port", lambda: self.writes_ok(state), timeout, 0.2)
        return time.monotonic() - t0

    # ---- Redis / Sentinel -------------------------------------------------------------------------------------

    def _current_redis_master(self, state: dict[str, Any]) -> int:
        """The port new Redis nodes and Sentinels follow: the Sentinels' master, else a running master, else redis-1."""
        port = self.redis_master()
        if port is not None:
            return port
        for node in REDIS_NODES:
            info = sentinel.replication(self.topo.redis_port(node)) if self.is_running(state, node) else None
            if info and info.get("role") == "master":
                return self.topo.redis_port(node)
        return self.topo.redis_port(REDIS_NODES[0])

    def _start_redis(self, state: dict[str, Any], nodes: list[str]) -> None:
        topo = self.topo
        master = self._current_redis_master(state)
        binary = find_tool("redis-server") or "redis-server"
        # The master first, so a replica started with it finds it.
        for node in sorted(nodes, key=lambda n: topo.redis_port(n) != master):
            self._check_free(node, topo.ports(node))
            replicaof = None if topo.redis_port(node) == master else master
            config = topo.node_dir(node) / "redis.conf"
            self._write(config, render.redis(topo, node, replicaof))
            role = "master" if replicaof is None else f"replica of {replicaof}"
            self.note(f"starting {node} (port {topo.redis_port(node)}, {role})")
            self._spawn(state, node, [binary, str(config)])
        for node in nodes:
            port = topo.redis_port(node)

            def ready(node: str = node, port: int = port) -> bool:
                self._alive_or_fail(state, node)
                info = sentinel.replication(port)
                if not info:
                    return False
                return port == master or info.get("master_link_status") == "up"

            wait_for(f"{node} answering (and in sync with its master)", ready, 30, 0.1, f"See {topo.log(node)}.")

    def _start_sentinels(self, state: dict[str, Any], nodes: list[str]) -> None:
        topo = self.topo
        master = self._current_redis_master(state)
        binary = find_tool("redis-sentinel") or "redis-sentinel"
        for node in nodes:
            self._check_free(node, topo.ports(node))
            config = topo.node_dir(node) / "sentinel.conf"
            self._write(config, render.sentinel(topo, node, master))  # a fresh file: never a rewritten one
            self.note(f"starting {node} (port {topo.sentinel_port(node)}, monitoring {master})")
            self._spawn(state, node, [binary, str(config)])
        for node in nodes:
            port = topo.sentinel_port(node)

            def ready(node: str = node, port: int = port) -> bool:
                self._alive_or_fail(state, node)
                return sentinel.sentinel_master(port) is not None

            wait_for(f"{node} answering", ready, 30, 0.1, f"See {topo.log(node)}.")

    def wait_sentinels_converged(self, state: dict[str, Any], timeout: float = 30.0) -> float:
        """Every running Sentinel knows the running replicas and the other running Sentinels (failover-ready)."""
        t0 = time.monotonic()
        sentinels = [n for n in SENTINELS if self.is_running(state, n)]
        replicas = len([n for n in REDIS_NODES if self.is_running(state, n)]) - 1

        def ok() -> bool:
            for node in sentinels:
                info = sentinel.sentinel_info(self.topo.sentinel_port(node))
                if not info or "s_down" in info.get("flags", "") or "o_down" in info.get("flags", ""):
                    return False
                if int(info.get("num-other-sentinels", 0)) < len(sentinels) - 1:
                    return False
                if int(info.get("num-slaves", 0)) < replicas:
                    return False
            return True

        wait_for("the Sentinels discovering each other and the replica", ok, timeout, 0.25)
        return time.monotonic() - t0

    # ---- HAProxy ----------------------------------------------------------------------------------------------

    def _start_haproxy(self, state: dict[str, Any]) -> None:
        topo = self.topo
        binary = find_tool("haproxy") or "/usr/sbin/haproxy"
        self._check_free("haproxy", topo.ports("haproxy"))
        config = topo.node_dir("haproxy") / "haproxy.cfg"
        self._write(config, render.haproxy(topo))
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            output = (check.stderr or check.stdout).strip().replace("\n", " | ")
            raise DevstackError(f"haproxy refuses the rendered configuration {config}: {output}")
        with contextlib.suppress(FileNotFoundError):
            topo.admin_socket.unlink()
        self.note(
            f"starting haproxy (primary {topo.primary_port}, replicas {topo.replicas_port}, app {topo.app_port}, "
            f"stats {topo.stats_port})"
        )
        self._spawn(state, "haproxy", [binary, "-db", "-f", str(config)])

        def ready() -> bool:
            self._alive_or_fail(state, "haproxy")
            return bool(haproxy_admin.servers(topo.admin_socket))

        wait_for("haproxy's admin socket", ready, 10, 0.05, f"See {topo.log('haproxy')}.")

    def wait_db_routing(self, timeout: float = 30.0) -> float:
        """HAProxy has exactly the leader UP in ``primary`` and each streaming replica UP in ``replicas``."""
        t0 = time.monotonic()

        def ok() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            servers = haproxy_admin.servers(self.topo.admin_socket)
            up_primary = {s for (b, s), st in servers.items() if b == "primary" and st.startswith("UP")}
            up_replicas = {s for (b, s), st in servers.items() if b == "replicas" and st.startswith("UP")}
            streaming = set(patroni.streaming_replicas(self.topo.rest_port(leader)))
            return up_primary == {leader} and streaming <= up_replicas

        wait_for("HAProxy routing to the leader and the replicas", ok, timeout, 0.2)
        return time.monotonic() - t0

    # ---- the app hosts ----------------------------------------------------------------------------------------

    def app_env(self, state: dict[str, Any]) -> dict[str, str]:
        from .app import environment

        return environment(self, state)

    def _start_apps(self, state: dict[str, Any], nodes: list[str]) -> None:
        from .app import migrate

        topo = self.topo
        for node in nodes:
            self._check_free(node, topo.ports(node))
        env = self.app_env(state)
        t0 = time.monotonic()
        migrate(self, env)
        self.note(f"migrations applied through HAProxy's primary port in {time.monotonic() - t0:.1f} s")
        for node in nodes:
            member = {**env, "PORT": str(topo.app_member_port(node)), "WEB_CONCURRENCY": str(state["workers"])}
            self.note(f"starting {node} (gunicorn settings.wsgi on port {topo.app_member_port(node)})")
            self._spawn(
                state, node, [sys.executable, "-m", "gunicorn", "settings.wsgi"], env=member, cwd=topo.project_root
            )
        self.wait_apps_up(state, nodes)

    def wait_apps_up(self, state: dict[str, Any], nodes: list[str], timeout: float = APP_START_TIMEOUT) -> float:
        t0 = time.monotonic()

        def ok() -> bool:
            for node in nodes:
                self._alive_or_fail(state, node)
            servers = haproxy_admin.servers(self.topo.admin_socket)
            return all(servers.get(("app", node), "").startswith("UP") for node in nodes)

        wait_for(f"HAProxy reporting {', '.join(nodes)} UP", ok, timeout, 0.25, f"See the logs in {self.topo.run_dir}.")
        return time.monotonic() - t0
