"""One stack's identity, files, lock and ports: the base the fault injection and the orchestration build on.

A stack is identified by the checkout (``project_root``) and a ``name``. It uses three consecutive loopback
ports starting at ``port_base``: primary, replica, redis. Node *names* (``primary``, ``replica``, ``redis``)
are fixed slots; *roles* can change: after :meth:`~devstack.faults.Faults.promote` the ``replica`` node is the
primary.

Where things live (see also the README-style notes in ``devstack/__init__.py``):

* ``<tmp>/bulwark-devstack-<sha1(realpath(project_root))[:10]>/<name>/`` -- the run dir, everything the
  servers touch (``<tmp>`` is ``$DEVSTACK_TMPDIR`` if set, else ``tempfile.gettempdir()``):
  ``primary/`` and ``replica/`` (``data/``, socket dir ``s/``, ``postgresql.log``; owned by the PostgreSQL
  user, 0700) and ``redis/``. Never inside the checkout: the checkout may be a 0700 ``mktemp -d`` folder
  that the postgres user (used when we are root) cannot enter.
* ``<project_root>/.stack/<name>/`` -- only pointers: ``state.json`` (0600: ports, pids, paths, passwords,
  roles) and symlinks to the three log files. A copy of ``state.json`` is kept in the run dir too, so
  a ``git clean -fdx`` does not orphan a running stack.

Mutating operations take a per-stack ``flock`` (:meth:`StackState._locked`, in the run dir's parent) so two
concurrent commands do not trip over each other.
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
import sys
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from .postgres import PgInstall, PgNode, find_postgres, postmaster_pid, temp_base
from .procs import LOOPBACK, DevstackError, RunAs, pg_identity, port_holder, port_in_use
from .redis import RedisNode

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


class StackState:
    """Identity, paths, ``state.json``, lock, ports and node handles of one named stack (no lifecycle)."""

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
        root = str(self.project_root)
        return f"{type(self).__name__}(name={self.name!r}, port_base={self.port_base}, project_root={root!r})"

    # ------------------------------------------------------------------------------------------------------
    # Node handles, ports, state.json, locking
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

    def _adopt_port_base(self, state: dict[str, Any]) -> None:
        """Move a stopped stack to ``self.port_base`` (the one asked for); a running one must go down first."""
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
