"""CPU starvation of a node: the duty-cycle SIGSTOP/SIGCONT process behind :meth:`devstack.faults.Faults.slow`.

A *cycler* is a small background process (``python -m devstack.throttle ...``, started by :func:`start`) that
repeats, every ``period`` seconds: SIGSTOP the node's postmaster and then every process below it (the family
is listed again each cycle, so backends forked meanwhile are caught; the root is stopped first so it cannot
fork while it is listed), wait ``duty * period``, SIGCONT the family (children first, the root last), wait the
rest of the period. The node runs ``1 - duty`` of the time: it answers, but slowly -- a CPU-starved host as
seen by its clients. For redis only the server process is cycled (it forks nothing with ``save ""``), as
:meth:`~devstack.faults.Faults.hang` does.

It never leaves the node stopped:

* SIGTERM, SIGINT and SIGHUP are blocked and waited for with ``sigtimedwait`` (they are the cycler's clock),
  so one arriving at any point ends the cycle cleanly: the family is SIGCONTed and the cycler exits.
* At start it forks a *guardian* that holds the read end of a pipe whose write end only the cycler has. When
  the cycler dies in any way, SIGKILL included, the guardian reads EOF, SIGCONTs the node's family and exits.
* It ends by itself when the node's postmaster is gone (or its pid now belongs to another process).
* :meth:`~devstack.faults.Faults.resume` -- and ``up``, ``start``, ``stop``, ``down`` through it; ``kill``,
  ``hang`` and another ``slow`` first thing -- ends it with SIGTERM (SIGKILL if it will not go), and ``resume``
  SIGCONTs the node's family anyway.

Both processes carry ``--tag <run dir>/<node>`` on their command line, so :func:`find` finds them from
another devstack command even if ``state.json`` was lost. The cycler logs one line as it starts and one as it
ends to ``<run dir>/slow-<node>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .procs import DevstackError, ProcInfo, alive, clean_env, continue_tree, descendants, proc_info, send, wait_gone

MIN_PERIOD = 0.01
MAX_PERIOD = 10.0
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
READY_TIMEOUT = 10.0
DONE = b"done"
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
_spawned: dict[int, subprocess.Popen[bytes]] = {}  # cyclers this process started (reaped by end())


def check(duty: float, period: float) -> None:
    """Raise DevstackError unless ``0 < duty < 1`` and ``MIN_PERIOD <= period <= MAX_PERIOD``."""
    if not 0 < duty < 1:
        raise DevstackError(
            f"the duty (the stopped share of each period) must be above 0 and below 1 (got {duty}); 1 would be `hang`."
        )
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        raise DevstackError(f"the period must be between {MIN_PERIOD} and {MAX_PERIOD} seconds (got {period}).")


# --------------------------------------------------------------------------------------------------------------
# Control side: start, find and end cyclers (used by devstack.faults)
# --------------------------------------------------------------------------------------------------------------


def start(root: int, duty: float, period: float, *, tag: str, log: Path, single: bool = False) -> dict[str, Any]:
    """Start a cycler on ``root`` (and its descendants unless ``single``); returns what state.json records.

    Returns once the cycler runs with its signals blocked and its guardian forked, so an immediate
    :func:`end` is clean.
    """
    check(duty, period)
    info = proc_info(root)
    if info is None:
        raise DevstackError(f"process {root} is gone; nothing to slow.")
    cmd = [
        sys.executable,
        "-m",
        "devstack.throttle",
        "--pid",
        str(root),
        "--starttime",
        str(info.starttime),
        "--duty",
        repr(duty),
        "--period",
        repr(period),
        "--tag",
        tag,
        *(["--single"] if single else []),
    ]
    env = clean_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))})
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C in the terminal of `devstack slow` does not reach it
        )
    _spawned[proc.pid] = proc
    assert proc.stdout is not None
    line = b""
    try:
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        if ready:
            line = proc.stdout.readline()
    finally:
        proc.stdout.close()
    words = line.decode(errors="replace").split()
    if len(words) != 2 or words[0] != "ready" or not words[1].isdigit():
        end([proc.pid])
        raise DevstackError(f"the slow cycler did not start (see {log}).")
    cycler = proc_info(proc.pid)
    return {
        "pid": proc.pid,
        "starttime": cycler.starttime if cycler else None,
        "guardian": int(words[1]),
        "root": root,
        "duty": duty,
        "period": period,
        "log": str(log),
    }


def running(entry: dict[str, Any] | None) -> bool:
    """Is the cycler recorded in ``entry`` (a :func:`start` result) still running?"""
    if not entry or not entry.get("pid"):
        return False
    info = proc_info(int(entry["pid"]))
    return alive(int(entry["pid"])) and info is not None and info.starttime == entry.get("starttime")


def find(tag: str) -> list[int]:
    """Live cyclers and guardians whose command line carries ``--tag tag``."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"devstack.throttle" not in argv:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if argv[argv.index(b"--tag") + 1] == tag.encode() and alive(int(name)):
                found.append(int(name))
    return found


def end(pids: list[int], timeout: float = 3.0) -> None:
    """SIGTERM the cyclers (each SIGCONTs its node and exits), SIGKILL what is left; reap our own children."""
    pids = [p for p in dict.fromkeys(pids) if alive(p)]
    for pid in pids:
        send(pid, signal.SIGTERM)
    if not wait_gone(pids, timeout):
        for pid in pids:
            if alive(pid):
                send(pid, signal.SIGKILL)
        wait_gone(pids, 2.0)
    for pid in list(_spawned):
        if not alive(pid):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                _spawned.pop(pid).wait(timeout=1)


# --------------------------------------------------------------------------------------------------------------
# The cycler itself
# --------------------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} devstack.throttle[{os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _children(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from /proc/<pid>/task/*/children; None where the kernel lacks that file."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for task in tasks:
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{task}").exists():
                continue  # the thread exited meanwhile
            return None  # no CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return kids


def _descendants(root: int) -> list[ProcInfo]:
    """Everything below ``root``: the cheap per-process children files when there are, else a /proc scan."""
    found: list[ProcInfo] = []
    queue = [root]
    seen = {root}
    while queue:
        kids = _children(queue.pop())
        if kids is None:
            return descendants(root)
        for kid in kids:
            info = proc_info(kid)
            if info is not None and kid not in seen:
                seen.add(kid)
                found.append(info)
                queue.append(kid)
    return found


def _stop_family(root: int, single: bool) -> list[int]:
    """SIGSTOP the root, then everything below it until a listing finds nothing new; the pids, root first."""
    send(root, signal.SIGSTOP)
    done = [root]
    if single:
        return done
    seen = {root}
    for _ in range(10):
        new = [p.pid for p in _descendants(root) if p.pid not in seen]
        if not new:
            break
        for pid in new:
            send(pid, signal.SIGSTOP)
            seen.add(pid)
            done.append(pid)
    return done


def _continue(pids: list[int]) -> None:
    """SIGCONT in reverse order of stopping: children first, the root last."""
    for pid in reversed(pids):
        send(pid, signal.SIGCONT)


def _release(root: int, starttime: int, stopped: list[int], single: bool) -> None:
    """SIGCONT what the last cycle stopped, and the root's current family if the root is still ours."""
    _continue(stopped)
    info = proc_info(root)
    if info is not None and info.starttime == starttime:
        if single:
            send(root, signal.SIGCONT)
        else:
            continue_tree(root)


def _signalled(deadline: float) -> int | None:
    """Wait until ``deadline`` (monotonic); the signal that ends the cycle if one came first (else None)."""
    info = signal.sigtimedwait(SIGNALS, max(0.0, deadline - time.monotonic()))
    return info.si_signo if info is not None else None


def _guardian(root: int, starttime: int, single: bool) -> tuple[int, int]:
    """Fork the process that SIGCONTs the family once the cycler is gone, however it died.

    Returns its pid and the write end of its pipe (the cycler writes :data:`DONE` to it as it ends cleanly).
    """
    read_end, write_end = os.pipe()
    cycler = os.getpid()
    pid = os.fork()
    if pid == 0:  # the guardian (SIGTERM/INT/HUP stay blocked: it ends only when the cycler is gone)
        try:
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            said = b""
            while chunk := os.read(read_end, 64):
                said += chunk
            _release(root, starttime, [], single)
            if said != DONE:  # the cycler died without ending the cycle (SIGKILL)
                _log(f"the cycler {cycler} died; its guardian continued the family of {root}")
        finally:
            os._exit(0)
    os.close(read_end)  # the write end stays open until this process ends
    return pid, write_end


def run(root: int, starttime: int, duty: float, period: float, single: bool) -> int:
    """The cycle (see the module docstring); returns the exit status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    info = proc_info(root)
    if info is None or info.starttime != starttime:
        _log(f"process {root} is gone; nothing to slow")
        return 1
    guardian, to_guardian = _guardian(root, starttime, single)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)  # wake up on time on a busy machine (where we may)
    what = "process" if single else "process family of"
    _log(f"slowing the {what} {root} ({info.comm}): stopped {duty:.0%} of every {period * 1000:.0f} ms")
    print(f"ready {guardian}", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the control side stopped reading
    stopped: list[int] = []
    cycles = 0
    why = ""
    try:
        while True:
            info = proc_info(root)
            if info is None or info.starttime != starttime or info.state in ("Z", "X", "x"):
                why = f"process {root} is gone"
                break
            began = time.monotonic()
            stopped = _stop_family(root, single)
            sig = _signalled(began + duty * period)
            _continue(stopped)
            cycles += 1
            if sig is None:
                sig = _signalled(began + period)
            if sig is not None:
                why = f"signal {signal.Signals(sig).name}"
                break
            stopped = []
    finally:
        _release(root, starttime, stopped, single)
        _log(f"ended ({why or 'error'}) after {cycles} cycles; the family is running")
        with contextlib.suppress(OSError):
            os.write(to_guardian, DONE)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack.throttle", description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True, help="the root process (postmaster / redis-server)")
    p.add_argument("--starttime", type=int, required=True, help="its start time (/proc/<pid>/stat field 22)")
    p.add_argument("--duty", type=float, required=True, help="the stopped share of each period (0-1)")
    p.add_argument("--period", type=float, required=True, help="seconds per stop/continue cycle")
    p.add_argument("--tag", required=True, help="an identifier for devstack to find this process by")
    p.add_argument("--single", action="store_true", help="only the root process, not its descendants")
    args = p.parse_args(argv)
    try:
        check(args.duty, args.period)
    except DevstackError as e:
        p.error(str(e))
    return run(args.pid, args.starttime, args.duty, args.period, args.single)


if __name__ == "__main__":
    sys.exit(main())
