"""Fault injection on a stack's nodes: kill (SIGKILL), hang (SIGSTOP) and resume (SIGCONT), slow (a SIGSTOP /
SIGCONT duty cycle: CPU starvation), promote the replica (a failover), and delay the replica's WAL apply
(replication lag).

:class:`Faults` adds these to :class:`~devstack.state.StackState`; :class:`devstack.stack.Stack` inherits
them. What :meth:`Faults.hang` stopped is recorded in ``state.json`` (pid and start time of each process), so
:meth:`Faults.resume` -- and ``up``, ``stop``, ``down``, which resume a hung node first -- continue exactly
those processes, even from another devstack command. The cycler process :meth:`Faults.slow` starts
(:mod:`devstack.throttle`) is recorded there too (``slowed``), and ends the same ways: ``resume``, ``up``,
``start``, ``stop``, ``down`` (a slowed node counts as hung for them), and ``kill``, ``hang`` and another
``slow`` end it first.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

from .procs import DevstackError, continue_procs, continue_tree, proc_info, send, stop_tree, stopped, with_log
from .state import PG_NODES, StackState

if TYPE_CHECKING:
    from types import ModuleType


def _throttle() -> ModuleType:
    # Imported when needed: `python -m devstack.throttle` (the cycler) imports the package first, and runpy
    # warns if the module it is about to run was already imported by then.
    from . import throttle

    return throttle


class Faults(StackState):
    """Crash, freeze, slow, fail over and delay a stack's nodes (all but the apply delay under the stack's lock)."""

    def kill(self, node: str) -> None:
        """SIGKILL the postmaster / redis-server: a real crash, no clean shutdown."""
        self._check_node(node)
        with self._locked():
            state = self._load_state()
            if not self._pid(node):
                raise DevstackError(f"{node} of stack '{self.name}' is not running, so it cannot be killed.")
            self._end_slow(node, state, quiet=True)  # or the cycler might stop the dying node's children again
            if node == "redis":
                self._redis().kill()
            else:
                self._pg_node(node).kill()
            if state:
                state.get("hung", {}).pop(node, None)
                self._save_state(state)

    def _hung(self, node: str) -> bool:
        """Stopped (hung), or slowed: then it is stopped most of the time, and ``up``/``start`` resume it."""
        pid = self._pid(node)
        return pid is not None and (stopped(pid) or self._slowed(node))

    def _slowed(self, node: str) -> bool:
        state = self._load_state()
        return _throttle().running((state or {}).get("slowed", {}).get(node))

    def hang(self, node: str) -> None:
        """SIGSTOP the node: for PostgreSQL the postmaster and all its descendants, for redis the server."""
        self._check_node(node)
        with self._locked():
            state = self._require_state()
            pid = self._pid(node)
            if not pid:
                raise DevstackError(f"{node} of stack '{self.name}' is not running, so it cannot be hung.")
            self._end_slow(node, state)
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
        self._end_slow(node, state, quiet)
        pairs = [tuple(p) for p in (state or {}).get("hung", {}).pop(node, [])]
        continue_procs(pairs)  # type: ignore[arg-type]
        pid = self._pid(node)
        if pid:
            if node == "redis":
                send(pid, signal.SIGCONT)
            else:
                continue_tree(pid)

    def slow(self, node: str, duty: float = 0.8, period: float = 0.1) -> None:
        """CPU-starve the node: SIGSTOP its process family for ``duty`` of every ``period`` s, SIGCONT it the rest.

        A background cycler (:mod:`devstack.throttle`) does it, re-listing the family each cycle (new backends
        are caught) and recorded in ``state.json``; :meth:`resume` ends it (``up``, ``start``, ``stop``,
        ``down`` too), leaving the node running. Slowing a slowed node replaces its cycle; a hung node must be
        resumed first. For redis only the server process is cycled, as :meth:`hang` does.
        """
        self._check_node(node)
        throttle = _throttle()
        throttle.check(duty, period)
        with self._locked():
            state = self._require_state()
            pid = self._pid(node)
            if not pid:
                raise DevstackError(f"{node} of stack '{self.name}' is not running, so it cannot be slowed.")
            self._end_slow(node, state, quiet=True)
            if stopped(pid) or state.get("hung", {}).get(node):
                raise DevstackError(f"{node} of stack '{self.name}' is hung (SIGSTOP); resume it before slowing it.")
            log = self.run_dir / f"slow-{node}.log"
            entry = throttle.start(pid, duty, period, tag=self._slow_tag(node), log=log, single=node == "redis")
            state.setdefault("slowed", {})[node] = entry
            self._save_state(state)
            self._note(f"{node} slowed: stopped {duty:.0%} of every {period * 1000:.0f} ms (cycler pid {entry['pid']})")

    def _slow_tag(self, node: str) -> str:
        return f"{self.run_dir}/{node}"

    def _end_slow(self, node: str, state: dict[str, Any] | None, quiet: bool = False) -> None:
        """End the node's cycler (the recorded one, and any other that names this node), if there is one."""
        throttle = _throttle()
        entry = (state or {}).get("slowed", {}).pop(node, None)
        pids = throttle.find(self._slow_tag(node))  # the cycler and its guardian, by their command line
        if throttle.running(entry):
            pids.append(int(entry["pid"]))
        if pids:
            throttle.end(pids)
            if not quiet:
                self._note(f"{node} is no longer slowed")

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
