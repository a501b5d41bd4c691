"""The hot paths counted in instructions: each server run again under callgrind, one worker, and the instructions
its process executes per operation counted exactly -- the reading this shared machine cannot move.

Why, beside the CPU time: on this 2-core host another tenant's load moves a server's CPU per request by 2-3x
between rounds, and a run's median ratio by up to 0.11 from one run of the same code to the next: twice the
target. The instructions a request executes do not depend on what else the machine runs (callgrind counts them
on a simulated CPU, so neither the cache nor the clock nor the scheduler enter; the same code, input and state
give the same count). They are not time: a cache miss costs nothing here, and the kernel's work not at all
(:mod:`bench.hotpaths.syscalls` counts the system calls and context switches), so the CPU rounds stay the
measure of the target and this the steady cross-check of the code's own work.

How (every server in turn, alone, under ``valgrind --tool=callgrind``):

1. the server is started as in the CPU rounds (same settings, same environment) but with one worker, through
   ``callgrind_gunicorn.py``: the project's gunicorn settings plus a control thread in the worker that zeroes and
   dumps callgrind's counts when asked (``callgrind_ctl.c``, callgrind's client requests, built here with gcc);
2. each path is warmed; then, ``repeats`` times over, each path's block of ``operations`` operations on one
   keep-alive connection (closed loop): counts zeroed just before the block's first request and dumped just
   after its last answer, so the count is every instruction the worker executed meanwhile, background threads
   included;
3. with no traffic, before the blocks and after each round of them, the worker's counts are taken over
   ``idle_seconds``: the background threads' instructions per second (probes, housekeeping, snapshot), which
   under valgrind's slowdown fall on a block 50-100 times more per request than at full speed; their median rate
   is taken out of each block (``rate x block wall time``) to leave the requests' own instructions, of which the
   smallest block's counts (:func:`per_operation` says why), and the fixed cost is given apart, per operation at
   the rate the CPU rounds ran at;
4. the worker's log, from the first count on, is read for what the slowdown may have tripped (a node reported
   down, a worker timeout): a run where the layer's timeouts fired under valgrind says so.

Needs valgrind, gcc and valgrind's headers (Debian's ``valgrind`` package has them); without them the phase is
skipped and the report says why. The raw callgrind files stay in the run folder (not committed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.harness import ROOT, free_port, say
from bench.hotpaths.load import Accounts, Plan, block_run, children_of
from bench.stats import median

HEADER = Path("/usr/include/valgrind/callgrind.h")
SHIM_SOURCE = Path(__file__).with_name("callgrind_ctl.c")
GUNICORN_CONFIG = "bench/hotpaths/callgrind_gunicorn.py"
PATHS = ("list", "detail", "cart", "checkout")  # not the log-in: PBKDF2 is nearly all of it, the layer cannot show
START_TIMEOUT = 600.0
REQUEST_TIMEOUT = 300.0
SETTLE_SECONDS = 3.0
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
_DESC = re.compile(r"^desc: Trigger: Client Request: (.*)$", re.MULTILINE)
# What valgrind's slowdown may trip in the layer: the worker's log is searched for these.
SLOWDOWN_EVENTS = ("db_node_down", "db_node_suspect", "WORKER TIMEOUT", "shed", "budget_exceeded")


def unavailable() -> str | None:
    """Why the phase cannot run here, or None."""
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian: apt-get install valgrind gcc)"
    if not HEADER.exists():
        return f"valgrind's headers not found ({HEADER}; Debian's valgrind package has them)"
    return None


def shim_build(directory: Path) -> Path:
    library = directory / "libcallgrind_ctl.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), str(SHIM_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return library


def dump_read(path: Path) -> tuple[str, int]:
    """A callgrind dump's label (the client request's) and its total instructions."""
    text = path.read_text(errors="replace")
    desc, totals = _DESC.search(text), _TOTALS.search(text)
    if desc is None or totals is None:
        raise RuntimeError(f"{path} is not a callgrind dump made by a client request")
    return desc.group(1).strip(), int(totals.group(1))


class CallgrindServer:
    """One gunicorn server (one worker) under callgrind, and the control socket of its worker."""

    def __init__(self, env: dict[str, str], app: str, directory: Path, log_path: Path, cpus: str) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={directory}/callgrind.out.%p",
            "--dump-line=no",
            "--dump-instr=no",
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            GUNICORN_CONFIG,
            app,
        ]
        if cpus and shutil.which("taskset"):
            command = ["taskset", "-c", cpus, *command]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.worker = 0
        self.dumps = 0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"gunicorn under callgrind exited with {code}; see {self.log_path}")
            workers = [pid for pid, parent in children_of({self.process.pid}).items() if parent == self.process.pid]
            if len(workers) == 1 and (self.directory / f"control-{workers[0]}.sock").exists():
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{self.url}/health/live", timeout=30).status_code == 200:
                        self.worker = workers[0]
                        if self.command("on-valgrind") != "1":
                            raise RuntimeError("the worker does not run under valgrind")
                        return
            time.sleep(0.5)
        raise RuntimeError(f"gunicorn under callgrind did not answer within {START_TIMEOUT:.0f} s; see {self.log_path}")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(REQUEST_TIMEOUT)
            conn.connect(str(self.directory / f"control-{self.worker}.sock"))
            conn.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(64)
                if not chunk:
                    break
                reply += chunk
        return reply.decode().strip()

    def zero(self) -> float:
        if self.command("zero") != "ok":
            raise RuntimeError("callgrind did not zero its counts")
        return time.perf_counter()

    def dump(self, label: str) -> tuple[float, int]:
        """Dump the counts since the last zero; (when, instructions)."""
        if self.command(f"dump {label}") != "ok":
            raise RuntimeError("callgrind did not dump its counts")
        when = time.perf_counter()
        self.dumps += 1
        found, instructions = dump_read(self.directory / f"callgrind.out.{self.worker}.{self.dumps}")
        if found != label:
            raise RuntimeError(f"callgrind dump {self.dumps} of worker {self.worker} is {found!r}, not {label!r}")
        return when, instructions

    def idle(self, seconds: float, label: str) -> dict[str, Any]:
        time.sleep(SETTLE_SECONDS)  # what the last requests left behind (their log records, say) is not idle work
        started = self.zero()
        time.sleep(seconds)
        ended, instructions = self.dump(label)
        return {"seconds": round(ended - started, 4), "instructions": instructions}

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=120)  # valgrind writes its last counts on the way out
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


class Meter:
    """``block_run``'s meter: zero before the block's first request, dump after its last answer."""

    def __init__(self, server: CallgrindServer, label: str) -> None:
        self.server, self.label, self.calls = server, label, 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return {"t": self.server.zero()}
        when, instructions = self.server.dump(self.label)
        return {"t": when, "instructions": instructions}


def _log_events(path: Path, start: int) -> dict[str, int]:
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    return {event: text.count(event) for event in SLOWDOWN_EVENTS if event in text}


def _block(server: CallgrindServer, accounts: Accounts, config: str, path: str, repeat: int, n: int) -> dict[str, Any]:
    label = f"{config}-{path}-{repeat}"
    plan = Plan(path, accounts, 1)
    samples, before, after, _ = block_run(
        plan, server.port, n, warmup=0, timeout=REQUEST_TIMEOUT, meter=Meter(server, label)
    )
    failed = sum(1 for s in samples if not plan.expected(s.status))
    say(
        f"instructions: {config:<11} {path:<8} #{repeat + 1}: "
        f"{after['instructions'] / max(1, len(samples)) / 1e6:.2f} M/op gross, "
        f"{after['t'] - before['t']:.0f} s" + (f", {failed} failed" if failed else "")
    )
    return {
        "path": path,
        "repeat": repeat,
        "operations": len(samples),
        "failed": failed,
        "wall": round(after["t"] - before["t"], 4),
        "instructions": after["instructions"],
    }


def measure(
    envs: dict[str, dict[str, str]],
    apps: dict[str, str],
    accounts: Accounts,
    out: Path,
    cleanup: list[Callable[[], None]],
    *,
    paths: list[str],
    operations: int,
    repeats: int,
    idle_seconds: float,
    cpus: str,
) -> dict[str, Any]:
    """Every server in turn under callgrind: instructions per block and with no traffic (see the module)."""
    reason = unavailable()
    if reason:
        say(f"instructions: skipped, {reason}")
        return {"skipped": reason}
    directory = out / "callgrind"
    directory.mkdir(exist_ok=True)
    shim = shim_build(directory)
    checkouts = max(1, operations // 5)
    result: dict[str, Any] = {
        "operations": operations,
        "checkouts": checkouts,
        "repeats": repeats,
        "paths": paths,
        "idle_seconds": idle_seconds,
        "servers": {},
    }
    started = time.monotonic()
    for config, base_env in envs.items():
        env = {
            **base_env,
            "WEB_CONCURRENCY": "1",
            "PORT": str(free_port()),
            "BENCH_CALLGRIND_DIR": str(directory),
            "BENCH_CALLGRIND_SHIM": str(shim),
        }
        say(f"instructions: {config} under callgrind (one worker)")
        server = CallgrindServer(env, apps[config], directory, out / f"callgrind-{config}.log", cpus)
        cleanup.append(server.stop)
        try:
            server.wait_ready()
            for path in paths:  # imports, connections, the key ring: outside any count
                block_run(Plan(path, accounts, 1), server.port, 3, warmup=1, timeout=REQUEST_TIMEOUT, meter=dict)
            mark = server.log_path.stat().st_size  # what the log says from here on happened while counting
            idle = [server.idle(idle_seconds, f"{config}-idle-0")]
            blocks = []
            for repeat in range(repeats):
                for path in paths:
                    blocks.append(
                        _block(server, accounts, config, path, repeat, checkouts if path == "checkout" else operations)
                    )
                idle.append(server.idle(idle_seconds, f"{config}-idle-{repeat + 1}"))
        finally:
            server.stop()
            cleanup.remove(server.stop)
        result["servers"][config] = {"idle": idle, "blocks": blocks, "log_events": _log_events(server.log_path, mark)}
        say(f"instructions: {config} idle {idle_rate(result['servers'][config]) / 1e6:.2f} M/s")
    result["seconds"] = round(time.monotonic() - started)
    return result


# ----------------------------------------------------------------------------------------------------------
# The figures
# ----------------------------------------------------------------------------------------------------------


def idle_rate(server: dict[str, Any]) -> float:
    """The worker's instructions per second with no traffic: the median of the readings (one before the blocks and
    one after each round of them)."""
    return median([i["instructions"] / max(1e-9, i["seconds"]) for i in server["idle"]])


def per_operation(server: dict[str, Any], path: str) -> dict[str, float] | None:
    """A path's instructions per operation on one server, each block's count with the background threads' share
    of its wall time taken out: ``net`` the smallest block's, ``median`` the blocks' median, ``spread`` the largest
    over the smallest, ``background`` what was taken out (median). The smallest, because what lands on some blocks
    and not others is work on a clock, not per request -- above all a database connection reopened once a minute
    (``CONN_MAX_AGE``; SCRAM's key stretching alone is some 65 M instructions), which valgrind's slowdown puts on
    a block 50-100 times more often per request than full speed does."""
    rate = idle_rate(server)
    nets, backgrounds = [], []
    for b in server["blocks"]:
        if b["path"] != path or not b["operations"]:
            continue
        backgrounds.append(rate * b["wall"] / b["operations"])
        nets.append(b["instructions"] / b["operations"] - backgrounds[-1])
    if not nets:
        return None
    return {
        "net": min(nets),
        "median": median(nets),
        "background": median(backgrounds),
        "spread": max(nets) / max(1e-9, min(nets)),
    }


def table(
    measured: dict[str, Any], native_ops_per_s: dict[tuple[str, str], float], workers: int, titles: dict[str, str]
) -> tuple[list[str], list[list[str]]]:
    """Per path and server: the requests' own instructions per operation (M), the blocks' spread, the ratio to
    *off*; the background threads' instructions per second with no traffic, and per operation at the rate the CPU
    rounds ran that path at (``workers`` workers each), and the ratio with that fixed cost added."""
    headers = [
        "path",
        "server",
        "M instructions/op, requests alone",
        "blocks' median",
        "blocks' spread",
        "÷ off",
        "no traffic: M/s per worker",
        "fixed M/op at the CPU rounds' rate",
        "with the fixed cost, ÷ off",
    ]
    servers = measured["servers"]
    body = []
    for path in measured["paths"]:
        base = per_operation(servers["off"], path) if "off" in servers else None
        if base is None:
            continue
        base_fixed = idle_rate(servers["off"]) * workers / max(1e-9, native_ops_per_s.get(("off", path), 0.0))
        for i, config in enumerate(servers):
            figures = per_operation(servers[config], path)
            if figures is None:
                continue
            rate = idle_rate(servers[config])
            fixed = rate * workers / max(1e-9, native_ops_per_s.get((config, path), 0.0))
            off = config == "off"
            body.append(
                [
                    f"**{path}**" if i == 0 else "",
                    titles[config],
                    f"{figures['net'] / 1e6:.2f}",
                    f"{figures['median'] / 1e6:.2f}",
                    f"{(figures['spread'] - 1):.1%}",
                    "1" if off else f"{figures['net'] / base['net']:.3f}",
                    f"{rate / 1e6:.2f}",
                    f"{fixed / 1e6:.3f}",
                    "1" if off else f"{(figures['net'] + fixed) / (base['net'] + base_fixed):.3f}",
                ]
            )
    return headers, body


def ratios(measured: dict[str, Any], config: str) -> dict[str, float]:
    """Each path's requests-alone instructions per operation, ``config`` over *off*."""
    servers = measured.get("servers", {})
    found = {}
    for path in measured.get("paths", []):
        mine, base = (per_operation(servers[c], path) if c in servers else None for c in (config, "off"))
        if mine and base:
            found[path] = mine["net"] / base["net"]
    return found
