"""Low-level process plumbing for devstack.

What lives here and why:

* :class:`DevstackError` -- the one exception type devstack raises on purpose. Its message is a complete,
  user-facing paragraph, so the CLI can print it as-is without a traceback.
* :class:`RunAs` / :func:`pg_identity` / :func:`run` -- PostgreSQL refuses to run as root. When devstack runs
  as root, every PostgreSQL binary is executed as the ``postgres`` system user (``subprocess`` switches
  uid/gid/supplementary groups in the child, like ``runuser`` would). As an ordinary user everything simply
  runs as that user. :func:`run` also scrubs ``PG*`` variables from the environment so that a stray
  ``PGHOST``/``PGPORT``/``PGDATA`` can never point our tools at somebody else's server.
* ``/proc`` helpers -- process liveness (zombies count as dead: the container's pid 1 may never reap them),
  descendant discovery by scanning ``/proc/*/stat`` (``hang`` must stop the postmaster *and* everything it
  forked), and signal fan-out.
* Port helpers -- is a loopback port free, and if not, who holds it (for a useful error message).
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


class DevstackError(Exception):
    """A user-facing devstack failure; ``str(err)`` is a complete explanation (no traceback needed)."""


# --------------------------------------------------------------------------------------------------------------
# Running commands, possibly as the postgres user
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """The identity PostgreSQL binaries (and their files) run as."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def switches(self) -> bool:
        """True when commands must switch to this user (i.e. we are root and this is not root)."""
        return self.uid != os.geteuid()

    def chown(self, path: str | os.PathLike[str]) -> None:
        """Give ``path`` to this user (no-op when we already are this user)."""
        if self.switches:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)


def blocking_dir(user: RunAs, path: Path) -> Path | None:
    """The first directory on the way to ``path`` (inclusive) that ``user`` cannot enter, or None."""
    groups = set(os.getgrouplist(user.name, user.gid))
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except FileNotFoundError:
            return None  # will be created by us, with suitable permissions
        if user.uid == 0:
            continue
        if st.st_uid == user.uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return d
    return None


def current_identity() -> RunAs:
    """The identity of this process (used for files that are not PostgreSQL's, e.g. Redis)."""
    pw = pwd.getpwuid(os.geteuid())
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def pg_identity() -> RunAs:
    """Who PostgreSQL runs as: the ``postgres`` system user when we are root, else ourselves."""
    if os.geteuid() != 0:
        return current_identity()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise DevstackError(
            "devstack is running as root, and PostgreSQL refuses to run as root, but there is no 'postgres' "
            "system user to run it as. Install the PostgreSQL server package (which creates that user) or run "
            "devstack as an ordinary user."
        ) from None
    if pw.pw_uid == 0:
        raise DevstackError("the 'postgres' system user has uid 0; PostgreSQL cannot run as root.")
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without any libpq/PostgreSQL ``PG*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    as_user: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (optionally as ``as_user``), capture text output, raise DevstackError on failure/timeout.

    The working directory is ``/``: the checkout may live in a 0700 ``mktemp -d`` folder the postgres user
    cannot enter, and PostgreSQL tools fail if they cannot resolve their cwd.
    """
    args = [os.fspath(c) for c in cmd]
    full_env = clean_env(env)
    kwargs: dict[str, object] = {}
    if as_user is not None and as_user.switches:
        kwargs.update(user=as_user.uid, group=as_user.gid, extra_groups=[])
        full_env.update(HOME=as_user.home, USER=as_user.name, LOGNAME=as_user.name)
    label = what or os.path.basename(args[0])
    try:
        proc = subprocess.run(
            args,
            env=full_env,
            cwd="/",
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            umask=0o077,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
    except FileNotFoundError:
        raise DevstackError(f"{label}: executable {args[0]} not found.") from None
    except subprocess.TimeoutExpired:
        raise DevstackError(f"{label} did not finish within {timeout:.0f} s (command: {' '.join(args)}).") from None
    if check and proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip() or "(no output)").replace("\n", " | ")
        raise DevstackError(f"{label} failed with exit code {proc.returncode}: {out}")
    return proc


# --------------------------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """The few fields of /proc/<pid>/stat devstack cares about."""

    pid: int
    comm: str
    state: str
    ppid: int
    starttime: int


def proc_info(pid: int) -> ProcInfo | None:
    """Parse /proc/<pid>/stat; None if the process does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    lp, rp = data.find("("), data.rfind(")")
    if lp < 0 or rp < 0:
        return None
    rest = data[rp + 2 :].split()
    try:
        return ProcInfo(pid, data[lp + 1 : rp], rest[0], int(rest[1]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def alive(pid: int | None, comms: Iterable[str] | None = None) -> bool:
    """Is ``pid`` a live (non-zombie) process, optionally with one of the given command names?"""
    if not pid or pid <= 0:
        return False
    info = proc_info(pid)
    if info is None or info.state in ("Z", "X", "x"):
        return False
    return comms is None or info.comm in set(comms)


def stopped(pid: int) -> bool:
    """Is ``pid`` stopped by a signal (SIGSTOP)?"""
    info = proc_info(pid)
    return info is not None and info.state in ("T", "t")


def all_procs() -> list[ProcInfo]:
    """Every process currently visible in /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                out.append(info)
    return out


def descendants(pid: int) -> list[ProcInfo]:
    """All processes below ``pid`` in the process tree (children, grandchildren, ...), by scanning /proc."""
    children: dict[int, list[ProcInfo]] = {}
    for info in all_procs():
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcInfo] = []
    queue = [pid]
    seen = {pid}
    while queue:
        for child in children.get(queue.pop(), []):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                queue.append(child.pid)
    return found


def send(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if the process is already gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def stop_tree(root: int, timeout: float = 5.0) -> list[tuple[int, int]]:
    """SIGSTOP ``root`` and all its descendants; wait until they are all stopped.

    The root is stopped first so it cannot fork new children while we walk the tree; the tree is walked
    again until no new process shows up. Returns ``(pid, starttime)`` pairs of everything stopped.
    """
    root_info = proc_info(root)
    if root_info is None:
        return []
    send(root, signal.SIGSTOP)
    done: dict[int, ProcInfo] = {root: root_info}
    for _ in range(10):
        new = [p for p in descendants(root) if p.pid not in done]
        if not new:
            break
        for p in new:
            send(p.pid, signal.SIGSTOP)
            done[p.pid] = p
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(not alive(p) or stopped(p) for p in done):
            break
        time.sleep(0.01)
    return [(p.pid, p.starttime) for p in done.values()]


def continue_procs(pairs: Iterable[tuple[int, int]]) -> int:
    """SIGCONT every ``(pid, starttime)`` that still refers to the same process; returns how many."""
    n = 0
    for pid, start in pairs:
        info = proc_info(pid)
        if info is not None and info.starttime == start and send(pid, signal.SIGCONT):
            n += 1
    return n


def continue_tree(root: int) -> int:
    """SIGCONT ``root`` and all its descendants (children first, so nothing waits on a stopped parent)."""
    pids = [p.pid for p in descendants(root)] + [root]
    return sum(1 for pid in pids if send(pid, signal.SIGCONT))


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive (zombies count as gone). True if they all went away in time."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = {p for p in pending if alive(p)}
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def read_pid(path: Path) -> int | None:
    """First line of a pid file as int, or None if missing/garbled."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError, OSError):
        return None
    return int(first) if first.isdigit() else None


# --------------------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True if something already listens on (or otherwise holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_holder(port: int) -> str | None:
    """Best effort 'pid N (comm)' of the process listening on TCP ``port`` (None if unknown)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    info = proc_info(int(entry))
                    return f"pid {entry} ({info.comm if info else '?'})"
            except OSError:
                continue
    return None


def tcp_ping(port: int, payload: bytes, timeout: float = 1.0, host: str = LOOPBACK) -> bytes | None:
    """Connect, send ``payload``, return the first bytes of the reply (None on any failure)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(payload)
            return s.recv(64)
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------------------


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, indented, for inclusion in an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"  (cannot read {path}: {e.strerror})"
    body = text.splitlines()[-lines:]
    return "\n".join("  | " + line for line in body) if body else "  (log is empty)"


def with_log(message: str, log: Path, lines: int = 20) -> str:
    """``message`` + a pointer to ``log`` + its last lines."""
    return f"{message} See the log file {log}; its last lines are:\n{tail(log, lines)}"
