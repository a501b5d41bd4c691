"""Stack orchestration: a PostgreSQL primary, its streaming replica and a Redis server, as one named unit.

A stack is identified by the checkout (``project_root``) and a ``name``. It uses three consecutive loopback
ports starting at ``port_base``: primary, replica, redis. Node *names* (``primary``, ``replica``, ``redis``)
are fixed slots; *roles* can change: after :meth:`Stack.promote` the ``replica`` node is the primary.

Where things live (see also the README-style notes in ``devstack/__init__.py``):

* ``<tmp>/bulwark-devstack-<sha1(realpath(project_root))[:10]>/<name>/`` -- everything the servers touch
  (``<tmp>`` is ``$DEVSTACK_TMPDIR`` if set, else ``tempfile.gettempdir()``):
  ``primary/`` and ``replica/`` (``data/``, socket dir ``s/``, ``postgresql.log``; owned by the PostgreSQL
  user, 0700) and ``redis/``. Never inside the checkout: the checkout may be a 0700 ``mktemp -d`` folder
  that the postgres user (used when we are root) cannot enter.
* ``<project_root>/.stack/<name>/`` -- only pointers: ``state.json`` (0600: ports, pids, paths, passwords,
  roles) and symlinks to the three log files. A copy of ``state.json`` is kept in the temp folder too, so
  a ``git clean -fdx`` does not orphan a running stack.

Everything is idempotent: ``up`` starts only what is not running (a killed node is simply started again;
PostgreSQL does crash recovery), ``down`` with nothing running is a no-op. Mutating operations take a
per-stack ``flock`` so two concurrent ``up`` calls do not trip over each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from .postgres import (
    PgInstall,
    PgNode,
    conninfo_quote,
    ensure_template,
    find_postgres,
    postmaster_pid,
    temp_base,
)
from .procs import (
    LOOPBACK,
    DevstackError,
    RunAs,
    blocking_dir,
    continue_procs,
    continue_tree,
    pg_identity,
    port_holder,
    port_in_use,
    proc_info,
    send,
    stop_tree,
    stopped,
    with_log,
)
from .redis import RedisNode, find_redis

NODES = ("primary", "replica", "redis")
PG_NODES = ("primary", "replica")
PORT_OFFSETS = {"primary": 0, "replica": 1, "redis": 2}
DEFAULT_NAME = "dev"
DEFAULT_PORT_BASE = 63432
RESERVED_PORTS = {5432: "the machine's own PostgreSQL", 6379: "the machine's own Redis"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
APP_USER = "bulwark"
APP_DB = "bulwark"
REPL_USER = "replicator"
STATE_VERSION = 1


def _stderr(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def _password() -> str:
    # token_urlsafe uses only [A-Za-z0-9_-]: safe in URLs, SQL literals and conninfo strings unescaped.
    return secrets.token_urlsafe(24)


def default_project_root() -> Path:
    """The checkout that contains the ``devstack`` package."""
    return Path(__file__).resolve().parent.parent


class Stack:
    """A named local PostgreSQL primary + streaming replica + Redis, on ports ``port_base .. port_base+2``."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        port_base: int | None = None,
        project_root: str | os.PathLike[str] | None = None,
        *,
        echo: Callable[[str], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not NAME_RE.match(name):
            raise DevstackError(
                f"invalid stack name {name!r}: use 1-32 characters from letters, digits, '_', '.', '-', "
                "starting with a letter or digit."
            )
        self.name = name
        self.project_root = Path(os.path.realpath(project_root or default_project_root()))
        digest = hashlib.sha1(str(self.project_root).encode(), usedforsecurity=False).hexdigest()[:10]
        self.run_root = temp_base() / f"bulwark-devstack-{digest}"
        self.run_dir = self.run_root / name
        self.state_dir = self.project_root / ".stack" / name
        self.state_file = self.state_dir / "state.json"
        self.timeout = timeout
        self._echo = echo or _stderr
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._drop_lock = False
        state = self._load_state()
        if (
            state
            and state.get("project_root") == str(self.project_root)
            and state.get("run_dir")
            and Path(state["run_dir"]) != self.run_dir
        ):
            # Created under another DEVSTACK_TMPDIR: keep using where the stack actually lives.
            self.run_dir = Path(state["run_dir"])
            self.run_root = self.run_dir.parent
        if port_base is None:
            port_base = int(state["port_base"]) if state else DEFAULT_PORT_BASE
        self.port_base = self._check_port_base(port_base)
        sock = self.run_dir / "replica" / "s" / f".s.PGSQL.{self.port_base + 1}"
        if len(str(sock)) > 100:
            raise DevstackError(
                f"the unix socket path {sock} would exceed the kernel's ~107 byte limit; use a shorter stack "
                "name or a shorter TMPDIR."
            )

    def __repr__(self) -> str:
        return f"Stack(name={self.name!r}, port_base={self.port_base}, project_root={str(self.project_root)!r})"

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------------------------------------------
    # Helpers: identity, nodes, ports, state, locking
    # ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_port_base(port_base: int) -> int:
        if not 1024 <= port_base <= 65533:
            raise DevstackError(f"--port-base must be between 1024 and 65533 (got {port_base}).")
        for port, what in RESERVED_PORTS.items():
            if port_base <= port <= port_base + 2:
                raise DevstackError(
                    f"port base {port_base} would use port {port}, which belongs to {what}; choose another "
                    "--port-base (the stack uses N, N+1, N+2)."
                )
        return port_base

    def _note(self, msg: str) -> None:
        self._echo(f"[{self.name}] {msg}")

    @cached_property
    def _pg(self) -> PgInstall:
        return find_postgres()

    @cached_property
    def _pg_user(self) -> RunAs:
        return pg_identity()

    def _pg_node(self, node: str) -> PgNode:
        if node not in PG_NODES:
            raise DevstackError(f"{node!r} is not a PostgreSQL node (expected one of {', '.join(PG_NODES)}).")
        return PgNode(self._pg, self._pg_user, self.run_dir / node, f"{self.name}-{node}")

    def _redis(self) -> RedisNode:
        return RedisNode(self.run_dir / "redis")

    def _check_node(self, node: str) -> str:
        if node not in NODES:
            raise DevstackError(f"unknown node {node!r}; expected one of {', '.join(NODES)}.")
        return node

    def _ports(self, state: dict[str, Any] | None = None) -> dict[str, int]:
        base = int(state["port_base"]) if state else self.port_base
        return {n: base + off for n, off in PORT_OFFSETS.items()}

    def _pid(self, node: str) -> int | None:
        if node == "redis":
            return self._redis().pid()
        # A pure liveness check needs no PostgreSQL install (so no find_postgres()).
        return postmaster_pid(self.run_dir / node / "data")

    def _load_state(self) -> dict[str, Any] | None:
        for f in (self.state_file, self.run_dir / "state.json"):
            try:
                state = json.loads(f.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                raise DevstackError(f"cannot read devstack state {f}: {e}. Fix or delete it.") from None
            if isinstance(state, dict) and state.get("version") == STATE_VERSION:
                return state
        return None

    def _new_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "project_root": str(self.project_root),
            "port_base": self.port_base,
            "ports": self._ports(),
            "run_dir": str(self.run_dir),
            "passwords": {APP_USER: _password(), REPL_USER: _password()},
            "primary_node": "primary",
            "roles": {"primary": "primary", "replica": "replica"},
            "bootstrapped": False,
            "hung": {},
            "pids": {},
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    def _write_private(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def _save_state(self, state: dict[str, Any]) -> None:
        state["pids"] = {n: self._pid(n) for n in NODES}
        state["nodes"] = {
            n: {
                "port": self._ports(state)[n],
                "data": str(self.run_dir / n / "data"),
                "log": str(self._log_path(n)),
            }
            for n in NODES
        }
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        stack_root = self.state_dir.parent
        stack_root.mkdir(exist_ok=True)
        gitignore = stack_root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# Created by devstack: runtime state, never commit.\n*\n")
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self._write_private(self.state_file, text)
        if self.run_dir.is_dir():
            self._write_private(self.run_dir / "state.json", text)
        for n in NODES:
            link = self.state_dir / f"{n}.log"
            target = self._log_path(n)
            if os.path.islink(link) and os.readlink(link) == str(target):
                continue
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(target)

    def _log_path(self, node: str) -> Path:
        if node == "redis":
            return self.run_dir / "redis" / "redis.log"
        return self.run_dir / node / "postgresql.log"

    def _ensure_run_root(self) -> None:
        try:
            self.run_root.mkdir(mode=0o711)
        except FileExistsError:
            pass
        st = self.run_root.lstat()
        if self.run_root.is_symlink() or not self.run_root.is_dir() or st.st_uid != os.geteuid():
            raise DevstackError(f"{self.run_root} exists but is not a directory owned by you; remove it and try again.")
        os.chmod(self.run_root, 0o711)  # noqa: S103 - others (postgres) may only traverse

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Per-stack exclusive flock (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self._ensure_run_root()
        path = self.run_root / f".{self.name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._note("another devstack command is working on this stack; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the file was removed by a `down` while we waited: lock the new one
        self._lock_fd, self._lock_depth, self._drop_lock = fd, 1, False
        try:
            yield
        finally:
            self._lock_depth = 0
            if self._drop_lock:
                with contextlib.suppress(OSError):
                    path.unlink()
                with contextlib.suppress(OSError):
                    self.run_root.rmdir()
            os.close(fd)
            self._lock_fd = None

    def _require_state(self) -> dict[str, Any]:
        state = self._load_state()
        if state is None:
            raise DevstackError(
                f"stack '{self.name}' has not been set up (no {self.state_file}); start it with "
                f"`python -m devstack --name {self.name} up`."
            )
        return state

    def _check_port_free(self, node: str, port: int) -> None:
        if port_in_use(port):
            holder = port_holder(port)
            by = f" by {holder}" if holder else ""
            raise DevstackError(
                f"port {port} on {LOOPBACK}, which stack '{self.name}' needs for its {node}, is already in use{by} "
                f"and that process is not part of this stack. Stop it, or choose another port range with "
                f"--port-base N (the stack uses N, N+1 and N+2 for primary, replica and redis; from Python: "
                f"Stack(name={self.name!r}, port_base=N))."
            )

    # ------------------------------------------------------------------------------------------------------
    # up / down
    # ------------------------------------------------------------------------------------------------------

    def up(self) -> dict[str, str]:
        """Start whatever is not running; wait for readiness and streaming replication. Returns :meth:`env`."""
        with self._locked():
            t0 = time.monotonic()
            state = self._load_state()
            if state is None:
                state = self._new_state()
            self._adopt_port_base(state)
            ports = self._ports(state)
            pnode = state["primary_node"]
            promoted = pnode != "primary"
            for node in NODES:
                if self._hung(node):
                    self._note(f"{node} was hung (SIGSTOP); resuming it")
                    self._resume(node, state)
            wanted = [pnode, *([] if promoted else ["replica"]), "redis"]
            missing = [n for n in wanted if not self._pid(n)]
            if not missing:
                self._note("already running")
            for node in missing:
                self._check_port_free(node, ports[node])
            if missing and self._pg_user.switches:
                blocked = blocking_dir(self._pg_user, self.run_root)
                if blocked:
                    raise DevstackError(
                        f"PostgreSQL runs as the '{self._pg_user.name}' user, which cannot enter {blocked} on the "
                        f"way to {self.run_root}. Use a temp dir everybody can traverse (unset TMPDIR, or set "
                        "DEVSTACK_TMPDIR=/tmp)."
                    )
            self.run_dir.mkdir(mode=0o711, exist_ok=True)
            self._save_state(state)  # passwords are persisted before anything uses them

            primary = self._pg_node(pnode)
            if not primary.exists():
                if promoted:
                    raise DevstackError(
                        f"stack '{self.name}' was failed over to its replica node, but that node's data "
                        f"({primary.data}) is gone. Run `python -m devstack --name {self.name} down` and `up` again."
                    )
                if self._pg_node("replica").exists():
                    raise DevstackError(
                        f"the primary's data ({primary.data}) is missing but the replica's still exists; refusing "
                        f"to build a new primary next to it. Run `python -m devstack --name {self.name} down` to "
                        "discard both and `up` again."
                    )
                template = ensure_template(self._pg, self._pg_user, self._note)
                self._note("creating the primary from the initdb template")
                primary.create_from_template(template)
                state["bootstrapped"] = False
                self._save_state(state)
            self._start_pg(pnode, state)
            if not state.get("bootstrapped"):
                self._bootstrap(state)
                state["bootstrapped"] = True
                self._save_state(state)

            if not promoted:
                replica = self._pg_node("replica")
                if not replica.exists():
                    self._note("creating the replica with pg_basebackup")
                    replica.create_from_basebackup(ports[pnode], state["passwords"][REPL_USER])
                self._start_pg("replica", state)
                self.wait_streaming()
            else:
                former = "primary"
                if self._pid(former):
                    self._note(
                        f"note: the former primary (port {ports[former]}) is still running as an independent "
                        "primary; its data has diverged."
                    )
                else:
                    self._note(
                        f"note: the former primary (port {ports[former]}) stays down: after the failover starting it "
                        f"would give a second, diverged primary. `down` + `up` rebuilds a fresh primary/replica pair."
                    )

            if not self._pid("redis"):
                self._start_redis(state)
            self._save_state(state)
            if missing:
                self._note(f"up in {time.monotonic() - t0:.1f} s")
            return self.env()

    def _adopt_port_base(self, state: dict[str, Any]) -> None:
        if int(state["port_base"]) == self.port_base:
            return
        running = [n for n in NODES if self._pid(n)]
        if running:
            raise DevstackError(
                f"stack '{self.name}' is running with port base {state['port_base']} ({', '.join(running)} up); "
                f"run `python -m devstack --name {self.name} down` before moving it to port base {self.port_base}, "
                "or omit --port-base."
            )
        self._note(f"moving the stack from port base {state['port_base']} to {self.port_base}")
        state["port_base"] = self.port_base
        state["ports"] = self._ports(state)

    def _bootstrap(self, state: dict[str, Any]) -> None:
        pw = state["passwords"]
        # Only constants and generated [A-Za-z0-9_-] passwords are interpolated.
        sql = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}') THEN CREATE ROLE {APP_USER}; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{REPL_USER}') THEN CREATE ROLE {REPL_USER}; END IF;
END $$;
ALTER ROLE {APP_USER} WITH LOGIN CREATEDB PASSWORD '{pw[APP_USER]}';
ALTER ROLE {REPL_USER} WITH LOGIN REPLICATION PASSWORD '{pw[REPL_USER]}';
SELECT 'CREATE DATABASE {APP_DB} OWNER {APP_USER}' WHERE NOT EXISTS
  (SELECT 1 FROM pg_database WHERE datname = '{APP_DB}') \\gexec
"""  # noqa: S608
        node = state["primary_node"]
        self._pg_node(node).psql(self._ports(state)[node], sql, dbname="postgres")

    def down(self) -> None:
        """Resume hung nodes, stop everything, remove all data, logs and state of this stack."""
        with self._locked():
            state = self._load_state()
            if not self.run_dir.exists() and not self.state_dir.exists():
                self._note("nothing to take down")
                self._drop_lock = True
                return
            t0 = time.monotonic()
            for node in NODES:
                self._resume(node, state, quiet=True)
            for node in ("replica", "primary"):
                if self._pid(node):
                    self._note(f"stopping {node}")
                    self._pg_node(node).stop(mode="immediate", timeout=self.timeout)
            if self._pid("redis"):
                self._note("stopping redis")
                self._redis().stop()
            still = [n for n in NODES if self._pid(n)]
            if still:
                raise DevstackError(f"could not stop {', '.join(still)}; nothing was removed.")
            shutil.rmtree(self.run_dir, ignore_errors=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)
            stack_root = self.state_dir.parent
            if stack_root.is_dir() and {p.name for p in stack_root.iterdir()} <= {".gitignore"}:
                shutil.rmtree(stack_root, ignore_errors=True)
            if self.run_dir.exists():
                raise DevstackError(f"stopped everything but could not remove {self.run_dir}.")
            self._drop_lock = True
            self._note(f"down in {time.monotonic() - t0:.1f} s")

    # ------------------------------------------------------------------------------------------------------
    # Node lifecycle
    # ------------------------------------------------------------------------------------------------------

    def _start_pg(self, node: str, state: dict[str, Any]) -> None:
        n = self._pg_node(node)
        if n.pid():
            return
        note = n.clear_stale_pidfile()
        if note:
            self._note(note)
        ports = self._ports(state)
        self._check_port_free(node, ports[node])
        conninfo = None
        if state["roles"].get(node) == "replica":
            primary_port = ports[state["primary_node"]]
            conninfo = (
                f"host={LOOPBACK} port={primary_port} user={REPL_USER} "
                f"password={conninfo_quote(state['passwords'][REPL_USER])} application_name={n.cluster_name}"
            )
        n.write_conf(ports[node], conninfo)
        self._note(f"starting {node} (port {ports[node]})")
        n.start(ports[node], timeout=self.timeout)

    def _start_redis(self, state: dict[str, Any]) -> None:
        r = self._redis()
        note = r.clear_stale_pidfile()
        if note:
            self._note(note)
        port = self._ports(state)["redis"]
        self._check_port_free("redis", port)
        self._note(f"starting redis (port {port})")
        r.start(find_redis(), port, timeout=self.timeout)

    def start(self, node: str) -> None:
        """Start one node (``pg_ctl start`` / redis-server) and wait until it accepts connections."""
        self._check_node(node)
        with self._locked():
            state = self._require_state()
            if self._pid(node):
                if self._hung(node):
                    self._note(f"{node} is running but hung; resuming it")
                    self._resume(node, state)
                else:
                    self._note(f"{node} is already running")
                return
            if node == "redis":
                self._start_redis(state)
            else:
                if not self._pg_node(node).exists():
                    raise DevstackError(
                        f"node {node} of stack '{self.name}' has no data directory; run "
                        f"`python -m devstack --name {self.name} up` to create it."
                    )
                if state["roles"].get(node) == "former-primary":
                    self._note(
                        f"warning: {node} is the former primary of a failed-over stack; it starts as a second, "
                        "independent primary (split brain)."
                    )
                self._start_pg(node, state)
            self._save_state(state)

    def stop(self, node: str) -> None:
        """Cleanly stop one node (``pg_ctl stop -m fast`` / SIGTERM); resumes it first if hung."""
        self._check_node(node)
        with self._locked():
            state = self._load_state()
            self._resume(node, state, quiet=True)
            if not self._pid(node):
                self._note(f"{node} is not running")
            elif node == "redis":
                self._redis().stop()
            else:
                self._pg_node(node).stop(mode="fast", timeout=self.timeout)
            if state:
                self._save_state(state)

    def stop_all(self) -> None:
        """Cleanly stop every node and keep the data: ``up`` starts the same stack again."""
        with self._locked():
            if not self.run_dir.exists():
                self._note("nothing to stop")
                return
            for node in ("replica", "primary", "redis"):
                self.stop(node)

    def restart(self, node: str) -> None:
        """:meth:`stop` then :meth:`start`."""
        with self._locked():
            self.stop(node)
            self.start(node)

    def kill(self, node: str) -> None:
        """SIGKILL the postmaster / redis-server: a real crash, no clean shutdown."""
        self._check_node(node)
        with self._locked():
            state = self._load_state()
            if not self._pid(node):
                raise DevstackError(f"{node} of stack '{self.name}' is not running, so it cannot be killed.")
            if node == "redis":
                self._redis().kill()
            else:
                self._pg_node(node).kill()
            if state:
                state.get("hung", {}).pop(node, None)
                self._save_state(state)

    def _hung(self, node: str) -> bool:
        pid = self._pid(node)
        return pid is not None and stopped(pid)

    def hang(self, node: str) -> None:
        """SIGSTOP the node: for PostgreSQL the postmaster and all its descendants, for redis the server."""
        self._check_node(node)
        with self._locked():
            state = self._require_state()
            pid = self._pid(node)
            if not pid:
                raise DevstackError(f"{node} of stack '{self.name}' is not running, so it cannot be hung.")
            if node == "redis":
                info = proc_info(pid)  # redis: just the server pid (it forks nothing with `save ""`)
                send(pid, signal.SIGSTOP)
                pairs = [(pid, info.starttime)] if info else []
            else:
                pairs = stop_tree(pid)
            state.setdefault("hung", {})[node] = pairs
            self._save_state(state)

    def resume(self, node: str) -> None:
        """SIGCONT everything :meth:`hang` stopped (and the node's current process tree)."""
        self._check_node(node)
        with self._locked():
            state = self._load_state()
            self._resume(node, state)
            if state:
                self._save_state(state)

    def _resume(self, node: str, state: dict[str, Any] | None, quiet: bool = False) -> None:
        pairs = [tuple(p) for p in (state or {}).get("hung", {}).pop(node, [])]
        continue_procs(pairs)  # type: ignore[arg-type]
        pid = self._pid(node)
        if pid:
            if node == "redis":
                send(pid, signal.SIGCONT)
            else:
                continue_tree(pid)

    def promote(self) -> None:
        """Promote the replica to primary (``pg_ctl promote``); waits until it accepts writes."""
        with self._locked():
            state = self._require_state()
            if state["primary_node"] != "primary":
                raise DevstackError(
                    f"stack '{self.name}' has already been failed over (the replica node is the primary); there is "
                    "no replica left to promote."
                )
            port = self._ports(state)["replica"]
            if not self._pid("replica"):
                raise DevstackError(f"the replica of stack '{self.name}' is not running; start it before promoting.")
            if self._hung("replica"):
                raise DevstackError(f"the replica of stack '{self.name}' is hung; resume it before promoting.")
            self._pg_node("replica").promote(port, timeout=self.timeout)
            state["primary_node"] = "replica"
            state["roles"] = {"primary": "former-primary", "replica": "primary"}
            state.get("hung", {}).pop("replica", None)
            self._save_state(state)
            self._note(f"promoted the replica (port {port}); it is now the primary")
            if self._pid("primary"):
                how = "hung; once resumed it acts as" if self._hung("primary") else "still running as"
                self._note(
                    f"note: the old primary (port {self._ports(state)['primary']}) is {how} an independent, "
                    "diverging primary."
                )

    def set_apply_delay(self, seconds: float) -> None:
        """Set ``recovery_min_apply_delay`` on the replica (ALTER SYSTEM + reload); 0 removes it."""
        if seconds < 0:
            raise DevstackError("the apply delay must be >= 0 seconds.")
        state = self._require_state()
        replicas = [n for n in PG_NODES if state["roles"].get(n) == "replica"]
        if not replicas or not self._pid(replicas[0]):
            raise DevstackError(f"stack '{self.name}' has no running replica to delay.")
        node = replicas[0]
        ms = round(seconds * 1000)
        if ms:
            sql = f"ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms';\nSELECT pg_reload_conf();"
        else:
            sql = "ALTER SYSTEM RESET recovery_min_apply_delay;\nSELECT pg_reload_conf();"
        n = self._pg_node(node)
        port = self._ports(state)[node]
        n.psql(port, sql, dbname="postgres")
        deadline = time.monotonic() + 10
        check = "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'"
        while n.psql(port, check, dbname="postgres") != str(ms):
            if time.monotonic() >= deadline:
                raise DevstackError(with_log("the replica did not pick up the new apply delay.", n.log))
            time.sleep(0.05)
        self._note(f"replica apply delay set to {ms} ms" if ms else "replica apply delay removed")

    def wait_streaming(self, timeout: float | None = None) -> None:
        """Wait until the primary's ``pg_stat_replication`` shows the replica as ``streaming``."""
        state = self._require_state()
        if state["primary_node"] != "primary":
            return  # failed over: there is no replica any more
        ports = self._ports(state)
        primary, replica = self._pg_node("primary"), self._pg_node("replica")
        sql = (
            "SELECT count(*) FROM pg_stat_replication "  # noqa: S608 - cluster_name is built from a validated name
            f"WHERE application_name = '{replica.cluster_name}' AND state = 'streaming'"
        )
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if primary.psql(ports["primary"], sql, dbname="postgres", timeout=10) != "0":
                return
            if not replica.pid():
                raise DevstackError(with_log("the replica stopped while waiting for it to stream.", replica.log))
            if time.monotonic() >= deadline:
                raise DevstackError(
                    with_log(
                        f"the replica (port {ports['replica']}) did not start streaming from the primary "
                        f"(port {ports['primary']}) within {timeout:.0f} s.",
                        replica.log,
                    )
                )
            time.sleep(0.1)

    # ------------------------------------------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------------------------------------------

    def psql(self, node: str, sql: str, dbname: str = APP_DB, timeout: float = 30.0) -> str:
        """Run SQL as superuser over the node's unix socket; returns unaligned, tuples-only output (``a|b``)."""
        state = self._load_state()
        n = self._pg_node(node)
        if not self._pid(node):
            raise DevstackError(f"{node} of stack '{self.name}' is not running.")
        if self._hung(node):
            raise DevstackError(f"{node} of stack '{self.name}' is hung (SIGSTOP); resume it first.")
        return n.psql(self._ports(state)[node], sql, dbname=dbname, timeout=timeout)

    def env(self, check: bool = False) -> dict[str, str]:
        """Connection settings for the app: DATABASE_URL (current primary), replicas, Redis, DEVSTACK_* info.

        With ``check=True`` raise DevstackError unless the current primary and redis are running.
        """
        state = self._require_state()
        ports = self._ports(state)
        pnode = state["primary_node"]
        if check:
            down = [n for n in (pnode, "redis") if not self._pid(n)]
            if down:
                raise DevstackError(
                    f"stack '{self.name}' is not up ({' and '.join(down)} not running); start it with "
                    f"`python -m devstack --name {self.name} up`."
                )
        pw = state["passwords"][APP_USER]

        def url(port: int) -> str:
            return f"postgres://{APP_USER}:{pw}@{LOOPBACK}:{port}/{APP_DB}"

        replicas = [n for n in PG_NODES if state["roles"].get(n) == "replica"]
        hosts = ",".join(f"{LOOPBACK}:{ports[n]}" for n in [pnode, *[n for n in PG_NODES if n != pnode]])
        return {
            "DATABASE_URL": url(ports[pnode]),
            "DATABASE_REPLICA_URLS": ",".join(url(ports[n]) for n in replicas),
            "DATABASE_URL_MULTIHOST": f"postgres://{APP_USER}:{pw}@{hosts}/{APP_DB}?target_session_attrs=read-write",
            "REDIS_URL": f"redis://{LOOPBACK}:{ports['redis']}/0",
            "DEVSTACK_NAME": self.name,
            "DEVSTACK_PORT_BASE": str(state["port_base"]),
            "DEVSTACK_PRIMARY_PORT": str(ports[pnode]),
            "DEVSTACK_REPLICA_PORT": ",".join(str(ports[n]) for n in replicas),
            "DEVSTACK_REDIS_PORT": str(ports["redis"]),
            "DEVSTACK_RUN_DIR": str(self.run_dir),
            "DEVSTACK_STATE_DIR": str(self.state_dir),
        }

    @staticmethod
    def format_env(env: dict[str, str]) -> str:
        """``KEY=value`` lines, shell-quoted where needed (for ``eval``/``source``)."""
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())

    def status(self) -> dict[str, dict[str, Any]]:
        """Per node: running, hung, pid, port, role, and for PostgreSQL in_recovery/streaming, data, log."""
        state = self._load_state()
        ports = self._ports(state)
        roles = (state or {}).get("roles", {"primary": "primary", "replica": "replica"})
        out: dict[str, dict[str, Any]] = {}
        for node in PG_NODES:
            pid = self._pid(node)
            hung = bool(pid and stopped(pid))
            info: dict[str, Any] = {
                "running": pid is not None,
                "hung": hung,
                "pid": pid,
                "port": ports[node],
                "role": roles.get(node, node),
                "recorded_role": roles.get(node, node),
                "in_recovery": None,
                "streaming": None,
                "replicas_streaming": None,
                "responding": None,
                "data": str(self.run_dir / node / "data"),
                "log": str(self._log_path(node)),
            }
            if pid and not hung:
                sql = (
                    "SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), ''), "
                    "(SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')"
                )
                try:
                    rec, receiver, nrep = self._pg_node(node).psql(ports[node], sql, timeout=10).split("|")
                    info.update(
                        responding=True,
                        in_recovery=rec == "t",
                        role="replica" if rec == "t" else "primary",
                        streaming=(receiver == "streaming") if rec == "t" else None,
                        replicas_streaming=int(nrep),
                    )
                except (DevstackError, ValueError):
                    info["responding"] = False
            out[node] = info
        pid = self._pid("redis")
        hung = bool(pid and stopped(pid))
        responding = None
        if pid and not hung:
            responding = self._redis().ping(ports["redis"])
        out["redis"] = {
            "running": pid is not None,
            "hung": hung,
            "pid": pid,
            "port": ports["redis"],
            "role": "redis",
            "responding": responding,
            "log": str(self._log_path("redis")),
        }
        return out

    @staticmethod
    def format_status(status: dict[str, dict[str, Any]]) -> str:
        """One human-readable line per node."""
        lines = []
        for node, s in status.items():
            state = "hung" if s["hung"] else ("up" if s["running"] else "DOWN")
            parts = [f"{node:<8}", f"{state:<5}", f"port {s['port']}", f"role {s['role']:<14}"]
            if s["running"]:
                parts.append(f"pid {s['pid']}")
            if s.get("recorded_role") == "former-primary":
                parts.append("former primary (failed over; diverged if running)")
            if s.get("responding") is False:
                parts.append("not responding")
            if s.get("streaming") is not None:
                parts.append("streaming" if s["streaming"] else "NOT streaming")
            if s.get("replicas_streaming"):
                parts.append(f"{s['replicas_streaming']} replica(s) streaming")
            if not s["running"]:
                parts.append(f"log {s['log']}")
            lines.append("  ".join(parts))
        return "\n".join(lines)
