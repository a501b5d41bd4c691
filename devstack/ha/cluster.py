"""The topology's lifecycle: ``up`` (start what is missing, wait until it serves), ``down``, ``env``, ha.json.

``up`` goes bottom-up and waits at every layer before the next: etcd healthy; the three Patroni nodes (started
together: one wins the leader lock and runs initdb, the others clone it with pg_basebackup) until one leads,
the app role exists and both replicas stream; Redis master + replica; three Sentinels that know the replica and
each other (else a failover right after ``up`` would find no quorum); HAProxy with the leader UP in ``primary``
and the replicas UP in ``replicas``; then (unless ``--no-app``) ``manage.py migrate`` through HAProxy's primary
port and the two gunicorn hosts UP in HAProxy's ``app`` backend. What runs is kept, so ``up`` twice is harmless
and ``start`` (every process, or the ones named) is the same walk. Configurations are rendered from the
templates under ``deploy/`` before every start (:mod:`devstack.ha.render`): a Sentinel's or Redis node's file
rewritten by Sentinel is never reused.

``down`` stops everything (SIGCONT first, SIGTERM, SIGKILL after a grace period, then any process whose command
line still names the run directory: a postmaster whose Patroni was killed), then removes the run directory and
ha.json: nothing is left, every port is free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..postgres import PgInstall, find_postgres, postmaster_pid
from ..procs import LOOPBACK, DevstackError, RunAs, blocking_dir, pg_identity, port_holder, port_in_use, with_log
from . import patroni, render, sentinel
from .engines import WAIT_TIMEOUT, Engines, find_tool
from .process import group_signal, running, spawn, stop_group, wait_gone
from .topology import APPS, DEFAULT_PORT_BASE, PG_NODES, PROCESSES, REDIS_NODES, SENTINELS, SPAN, Topology

STATE_VERSION = 1
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


def _password() -> str:
    return secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: safe in URLs, SQL literals and YAML quotes


def _stderr(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


class Cluster(Engines):
    """One named topology (see :mod:`devstack.ha.topology` for its ports and files)."""

    def __init__(
        self,
        name: str,
        port_base: int | None = None,
        project_root: str | os.PathLike[str] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        from ..state import NAME_RE, default_project_root

        if not NAME_RE.match(name):
            raise DevstackError(f"invalid name {name!r}: 1-32 letters, digits, '_', '.', '-', starting alnum.")
        root = Path(os.path.realpath(project_root or default_project_root()))
        self._echo = echo or _stderr
        probe = Topology(name, port_base or DEFAULT_PORT_BASE, root)
        state = self._read(probe.state_file)
        tmp = Path(state["tmp"]) if state and state.get("tmp") else None
        base = port_base or (int(state["port_base"]) if state else DEFAULT_PORT_BASE)
        self.topo = Topology(name, base, root, tmp)
        self.name = name
        self._lock_depth = 0

    # ---- ha.json, lock, notes -----------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self._echo(f"[{self.name}] ha: {message}")

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise DevstackError(f"cannot read {path}: {error}. Fix or delete it.") from None
        return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None

    def load(self) -> dict[str, Any] | None:
        return self._read(self.topo.state_file)

    def require(self) -> dict[str, Any]:
        state = self.load()
        if state is None:
            raise DevstackError(
                f"topology '{self.name}' has not been set up (no {self.topo.state_file}); start it with "
                f"`python -m devstack ha --name {self.name} up`."
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.topo.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        gitignore = self.topo.project_root / ".stack" / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# Created by devstack: runtime state, never commit.\n*\n")
        tmp = self.topo.state_file.with_name(f"ha.json.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.topo.state_file)

    def _new_state(self) -> dict[str, Any]:
        topo = self.topo
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "project_root": str(topo.project_root),
            "port_base": topo.port_base,
            "tmp": str(topo.run_root.parent),
            "run_dir": str(topo.run_dir),
            "passwords": {"postgres": _password(), render.REPLICATION_USER: _password(), patroni.APP_USER: _password()},
            "secrets": {"SECRET_KEY": secrets.token_urlsafe(64), "JWT_SECRET": secrets.token_urlsafe(48)},
            "etcd_token": f"bulwark-{secrets.token_hex(4)}",
            "app": True,
            "workers": 1,
            "procs": {},
            "hung": [],
            "bootstrapped": False,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.topo.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.topo.state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.note("another devstack ha command is working on this topology; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            yield
        finally:
            self._lock_depth = 0
            os.close(fd)

    # ---- who runs ---------------------------------------------------------------------------------------------

    def is_running(self, state: dict[str, Any], process: str) -> bool:
        return running(state["procs"].get(process))

    def pid(self, state: dict[str, Any], process: str) -> int | None:
        entry = state["procs"].get(process)
        return int(entry["pid"]) if running(entry) else None

    def postmaster(self, node: str) -> int | None:
        return postmaster_pid(self.topo.node_dir(node) / "data")

    @property
    def pg_user(self) -> RunAs:
        return pg_identity()

    def rest_ports(self, nodes: Iterable[str] = PG_NODES) -> dict[str, int]:
        return {node: self.topo.rest_port(node) for node in nodes}

    def members(self) -> dict[str, Any] | None:
        return patroni.cluster_view(self.rest_ports())

    def leader(self) -> str | None:
        return patroni.leader_of(self.members())

    def redis_master(self) -> int | None:
        """The master's port as most answering Sentinels name it (None when none answers)."""
        votes: dict[int, int] = {}
        for node in SENTINELS:
            port = sentinel.sentinel_master(self.topo.sentinel_port(node))
            if port is not None:
                votes[port] = votes.get(port, 0) + 1
        return max(votes, key=lambda port: votes[port]) if votes else None

    def redis_node(self, port: int | None) -> str | None:
        return next((node for node in REDIS_NODES if self.topo.redis_port(node) == port), None)

    # ---- env --------------------------------------------------------------------------------------------------

    def env(self, state: dict[str, Any] | None = None, check: bool = False) -> dict[str, str]:
        state = state or self.require()
        topo = self.topo
        if check and not self.is_running(state, "haproxy"):
            raise DevstackError(
                f"topology '{self.name}' is not up (haproxy not running); start it with "
                f"`python -m devstack ha --name {self.name} up`."
            )
        password = state["passwords"][patroni.APP_USER]
        user, db, host = patroni.APP_USER, patroni.APP_DB, topo.host
        return {
            # HAProxy's primary port decides (Patroni's /primary); target_session_attrs is only a second line: a node
            # it routes to that is read-only (a check a second behind a switchover) is refused by libpq itself.
            "DATABASE_URL": (
                f"postgresql://{user}:{password}@{host}:{topo.primary_port}/{db}"
                "?connect_timeout=2&target_session_attrs=read-write"
            ),
            "DATABASE_REPLICA_URLS": f"postgresql://{user}:{password}@{host}:{topo.replicas_port}/{db}",
            "REDIS_SENTINELS": ",".join(f"{host}:{topo.sentinel_port(node)}" for node in SENTINELS),
            "REDIS_SENTINEL_MASTER": sentinel.MASTER_NAME,
            "BULWARK_HA_APP_URL": topo.urls()["app"],
            "DEVSTACK_HA_NAME": self.name,
            "DEVSTACK_HA_PORT_BASE": str(topo.port_base),
            "DEVSTACK_HA_STATS_URL": topo.urls()["stats"],
            "DEVSTACK_HA_RUN_DIR": str(topo.run_dir),
            "DEVSTACK_HA_STATE_DIR": str(topo.state_dir),
            "PATRONICTL_CONFIG_FILE": str(topo.node_dir("pg1") / "patroni.yml"),
        }

    # ---- up / start -------------------------------------------------------------------------------------------

    def up(
        self, app: bool | None = None, only: Iterable[str] | None = None, workers: int | None = None
    ) -> dict[str, str]:
        """Start what is not running (of ``only``, else everything) and wait until it serves; returns :meth:`env`."""
        with self.locked():
            t0 = time.monotonic()
            state = self.load()
            fresh = state is None
            if state is None:
                state = self._new_state()
            self._adopt_port_base(state)
            if app is not None:
                state["app"] = app
            if workers is not None:
                if workers < 1:
                    raise DevstackError("--workers must be at least 1.")
                state["workers"] = workers  # for app hosts started from now on
            wanted = [p for p in PROCESSES if (p not in APPS or state["app"]) and (only is None or p in set(only))]
            if state.get("hung"):
                from .drills import resume_all

                self.note("some processes were hung (SIGSTOP); resuming them")
                resume_all(self, state)
            missing = [p for p in wanted if not self.is_running(state, p)]
            if not missing:
                self.note("already running")
                self.save(state)
                return self.env(state)
            self._check_tools(missing)
            self._prepare_dirs()
            self.save(state)  # passwords are persisted before anything uses them
            if "etcd" in missing:
                self._start_etcd(state)
            pg_missing = [n for n in PG_NODES if n in missing]
            if pg_missing:
                self._start_patroni(state, pg_missing)
            if pg_missing or not state["bootstrapped"]:
                leader = self.wait_leader(BOOT_TIMEOUT if not state["bootstrapped"] else WAIT_TIMEOUT)
                if not state["bootstrapped"]:
                    self._bootstrap(state, leader)
                    self.note(f"cluster bootstrapped in {time.monotonic() - t0:.1f} s (leader {leader})")
                replicas = [n for n in pg_missing if n != leader] or []
                if fresh:
                    replicas = [n for n in PG_NODES if n != leader]
                self.wait_streaming(replicas, BOOT_TIMEOUT)
                self.wait_sync_standby()
            redis_missing = [n for n in REDIS_NODES if n in missing]
            if redis_missing:
                self._start_redis(state, redis_missing)
            sentinels_missing = [n for n in SENTINELS if n in missing]
            if sentinels_missing:
                self._start_sentinels(state, sentinels_missing)
            if redis_missing or sentinels_missing:
                self.wait_sentinels_converged(state)
            if "haproxy" in missing:
                self._start_haproxy(state)
            if self.is_running(state, "haproxy"):
                self.wait_db_routing()
            apps_missing = [n for n in APPS if n in missing]
            if apps_missing:
                self._start_apps(state, apps_missing)
            self.save(state)
            self.note(f"up in {time.monotonic() - t0:.1f} s ({', '.join(missing)} started)")
            return self.env(state)

    def _adopt_port_base(self, state: dict[str, Any]) -> None:
        if int(state["port_base"]) == self.topo.port_base:
            return
        up = [p for p in PROCESSES if self.is_running(state, p)]
        if up:
            raise DevstackError(
                f"topology '{self.name}' runs with port base {state['port_base']} ({', '.join(up)} up); run "
                f"`python -m devstack ha --name {self.name} down` before moving it to {self.topo.port_base}, or omit "
                "--port-base."
            )
        state["port_base"] = self.topo.port_base

    def _check_tools(self, missing: list[str]) -> None:
        if any(p in PG_NODES for p in missing):
            patroni.find_patroni()
            self.pg_install  # noqa: B018 - raises when PostgreSQL is missing
        if "etcd" in missing:
            patroni.find_etcd()
        for process, tool in (("redis-1", "redis-server"), ("sentinel-1", "redis-sentinel"), ("haproxy", "haproxy")):
            if any(p.split("-")[0] == process.split("-")[0] for p in missing) and not find_tool(tool):
                raise DevstackError(
                    f"{tool} is not installed; install Debian's redis-server, redis-sentinel and haproxy packages "
                    "(scripts/bootstrap.sh does)."
                )

    @property
    def pg_install(self) -> PgInstall:
        return find_postgres()

    def _prepare_dirs(self) -> None:
        topo = self.topo
        try:
            topo.run_root.mkdir(mode=0o711, exist_ok=True)
        except OSError as error:
            raise DevstackError(f"cannot create {topo.run_root}: {error.strerror}.") from None
        os.chmod(topo.run_root, 0o711)  # noqa: S103 - the postgres user must traverse it
        topo.run_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(topo.run_dir, 0o711)  # noqa: S103
        user = self.pg_user
        if user.switches:
            blocked = blocking_dir(user, topo.run_dir)
            if blocked:
                raise DevstackError(
                    f"PostgreSQL runs as the '{user.name}' user, which cannot enter {blocked} on the way to "
                    f"{topo.run_dir}. Use a temp dir everybody can traverse (set DEVSTACK_TMPDIR=/tmp)."
                )
        for node in PG_NODES:
            base = topo.node_dir(node)
            for path in (base, base / "s"):
                path.mkdir(mode=0o700, exist_ok=True)
                user.chown(path)
                os.chmod(path, 0o700)
        for process in ("etcd", *REDIS_NODES, *SENTINELS, "haproxy", *APPS):
            topo.node_dir(process).mkdir(mode=0o700, exist_ok=True)

    def _check_free(self, process: str, ports: Iterable[int]) -> None:
        for port in ports:
            if port_in_use(port):
                holder = port_holder(port)
                raise DevstackError(
                    f"port {port} on {LOOPBACK}, which {process} of topology '{self.name}' needs, is already in use"
                    f"{' by ' + holder if holder else ''} and that process is not part of it. Stop it, or choose "
                    f"another --port-base N (devstack ha uses N .. N+61; see devstack/ha/topology.py)."
                )

    def _spawn(self, state: dict[str, Any], process: str, argv: list[str], **kwargs: Any) -> None:
        log = self.topo.log(process)
        kwargs.setdefault("cwd", self.topo.node_dir(process))
        kwargs.setdefault("env", _base_env())
        state["procs"][process] = spawn(argv, log=log, **kwargs)
        self.save(state)

    def _write(self, path: Path, text: str, owner: RunAs | None = None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if owner is not None:
            owner.chown(path)

    def _alive_or_fail(self, state: dict[str, Any], process: str) -> None:
        if not self.is_running(state, process):
            raise DevstackError(with_log(f"{process} exited while starting.", self.topo.log(process)))

    # ---- down -------------------------------------------------------------------------------------------------

    def down(self) -> None:
        with self.locked():
            t0 = time.monotonic()
            state = self.load()
            topo = self.topo
            if state is None and not topo.run_dir.exists():
                self.note("nothing to take down")
                shutil.rmtree(topo.state_dir, ignore_errors=True)
                with contextlib.suppress(OSError):
                    topo.state_dir.parent.rmdir()  # .stack/<name>/, unless the stack of that name uses it
                return
            procs = (state or {}).get("procs", {})
            if state and state.get("hung"):
                from .drills import resume_all

                resume_all(self, state)
            # The clients and the proxy, then Patroni (it stops its PostgreSQL), Redis and the Sentinels, at once.
            first = [p for p in PROCESSES if p != "etcd" and running(procs.get(p))]
            for process in first:
                group_signal(int(procs[process]["pid"]), signal.SIGCONT)
                group_signal(int(procs[process]["pid"]), signal.SIGTERM)
            pids = [int(procs[p]["pid"]) for p in first]
            if not wait_gone(pids, STOP_TIMEOUT):
                for process in first:
                    if running(procs.get(process)):
                        self.note(f"{process} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; SIGKILL")
                        group_signal(int(procs[process]["pid"]), signal.SIGKILL)
                wait_gone(pids, 5)
            for node in PG_NODES:
                pid = self.postmaster(node)
                if pid:
                    self.note(f"{node}'s PostgreSQL outlived its Patroni; stopping it")
                    stop_group(pid, 5)
            if running(procs.get("etcd")):
                stop_group(int(procs["etcd"]["pid"]), STOP_TIMEOUT)
            strays = _strays(topo.run_dir)
            for pid in strays:
                group_signal(pid, signal.SIGKILL)
            wait_gone(strays, 5)
            left = [p for p in PROCESSES if running(procs.get(p))] + [str(p) for p in _strays(topo.run_dir)]
            if left:
                raise DevstackError(f"could not stop {', '.join(left)}; {topo.state_file} is kept.")
            shutil.rmtree(topo.run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                topo.run_root.rmdir()
            shutil.rmtree(topo.state_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                topo.state_dir.parent.rmdir()
            busy = [port for port in range(topo.port_base, topo.port_base + SPAN) if port_in_use(port)]
            if busy:
                self.note(f"warning: ports {busy} are still in use")
            self.note(f"down in {time.monotonic() - t0:.1f} s ({len(first) + (1 if procs.get('etcd') else 0)} stopped)")


def _strays(run_dir: Path) -> list[int]:
    """Live processes whose command line names ``run_dir`` (a postmaster, a Patroni, etcd...): never another's."""
    needle = str(run_dir).encode() + b"/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def _base_env() -> dict[str, str]:
    """A clean environment for the servers (no PG*, no proxies or secrets of the caller)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return env
