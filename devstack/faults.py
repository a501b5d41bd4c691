"""Fault injection on a stack's nodes: kill (SIGKILL), hang (SIGSTOP) and resume (SIGCONT), promote the
replica (a failover), and delay the replica's WAL apply (replication lag).

:class:`Faults` adds these to :class:`~devstack.state.StackState`; :class:`devstack.stack.Stack` inherits
them. What :meth:`Faults.hang` stopped is recorded in ``state.json`` (pid and start time of each process), so
:meth:`Faults.resume` -- and ``up``, ``stop``, ``down``, which resume a hung node first -- continue exactly
those processes, even from another devstack command.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from .procs import DevstackError, continue_procs, continue_tree, proc_info, send, stop_tree, stopped, with_log
from .state import PG_NODES, StackState


class Faults(StackState):
    """Crash, freeze, fail over and delay the nodes of a stack (all but the apply delay under the stack's lock)."""

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
