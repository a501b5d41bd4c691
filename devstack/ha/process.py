"""The processes of the topology: started in a session of their own, recorded with their start time.

Every process (etcd, each Patroni, Redis, Sentinel, HAProxy, gunicorn) runs in the foreground of its own
session, so its pid is its process group and ``kill`` takes it with everything it forked at once. ha.json
records ``pid`` and ``starttime`` (from ``/proc/<pid>/stat``): a recycled pid is never taken for one of ours.
PostgreSQL is the exception: Patroni starts the postmaster in a session of its own (so it survives Patroni),
found through ``postmaster.pid`` in the node's data directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..procs import RunAs, alive, proc_info


def running(entry: Mapping[str, Any] | None) -> bool:
    """Is the process ``entry`` (``{"pid", "starttime"}``) still the one we started, and alive?"""
    if not entry or not entry.get("pid"):
        return False
    info = proc_info(int(entry["pid"]))
    return info is not None and info.starttime == int(entry.get("starttime") or 0) and alive(info.pid)


def spawn(
    argv: list[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | str,
    as_user: RunAs | None = None,
) -> dict[str, int]:
    """Start ``argv`` in its own session, output appended to ``log``; its ``{"pid", "starttime"}``."""
    kwargs: dict[str, Any] = {}
    if as_user is not None and as_user.switches:
        kwargs.update(user=as_user.uid, group=as_user.gid, extra_groups=[])
    with open(log, "ab") as handle:
        handle.write(f"--- devstack ha: {' '.join(argv)} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        handle.flush()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
            **kwargs,
        )
    info = proc_info(process.pid)
    return {"pid": process.pid, "starttime": info.starttime if info else 0}


def group_signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pid`` leads (never our own group); False if it is gone."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if pgid == os.getpgrp():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def group_members(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (from /proc/<pid>/stat's fifth field)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def stop_group(pid: int, timeout: float) -> None:
    """SIGCONT + SIGTERM the group ``pid`` leads; SIGKILL what is left after ``timeout``."""
    members = group_members(pid) or [pid]
    group_signal(pid, signal.SIGCONT)
    group_signal(pid, signal.SIGTERM)
    if not wait_gone(members, timeout):
        group_signal(pid, signal.SIGKILL)
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        wait_gone(members, 5)
