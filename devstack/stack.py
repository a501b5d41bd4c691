"""Stack orchestration: a PostgreSQL primary, its streaming replica and a Redis server, as one named unit.

:class:`Stack` is the public face of devstack: ``up``/``down``, per-node ``start``/``stop``/``restart``,
``status``, ``env``, ``wait_streaming`` and ``psql``. It inherits the fault injection (``kill``, ``hang``,
``resume``, ``promote``, ``set_apply_delay``) from :class:`devstack.faults.Faults`, and the identity, files,
``state.json``, lock and ports (see :mod:`devstack.state` for where everything lives) from
:class:`devstack.state.StackState`.

Everything is idempotent: ``up`` starts only what is not running (a killed node is simply started again;
PostgreSQL does crash recovery), ``down`` with nothing running is a no-op. Mutating operations take the
per-stack ``flock`` so two concurrent ``up`` calls do not trip over each other.
"""

from __future__ import annotations

import shlex
import shutil
import time
from typing import Any

from .faults import Faults
from .postgres import conninfo_quote, ensure_template
from .procs import LOOPBACK, DevstackError, blocking_dir, stopped, with_log
from .redis import find_redis
from .state import APP_DB, APP_USER, NODES, PG_NODES, REPL_USER


class Stack(Faults):
    """A named local PostgreSQL primary + streaming replica + Redis, on ports ``port_base .. port_base+2``."""

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

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
        """Resume hung nodes, stop everything (the split pools first), remove all data, logs and state of this stack."""
        if (self.state_dir / "pools" / "pools.json").exists():
            from .pools import Pools  # pools import this module

            Pools(self).down()  # its servers would be left running against a stack that is gone
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
