"""The hot paths' kernel side, counted: system calls and context switches per operation, with ``perf stat``.

Why: callgrind (:mod:`bench.hotpaths.instructions`) counts a request's instructions in user space only; what the
kernel does for it -- a Redis or PostgreSQL round trip's send and receive, a thread woken, a timer armed -- is not
in that count, yet it is part of a request's CPU. The number of system calls and of context switches is nearly
as steady as an instruction count (the same code on the same state makes the same calls), so it is counted here,
on the servers of the CPU rounds at full speed, each path in one extra block per server after the rounds (not
during them: counting costs the kernel a little on every call), and with no traffic (the background threads'
calls and wake-ups per second, whose share per operation depends on the rate, as in the CPU rounds).

``perf stat -e raw_syscalls:sys_enter,context-switches -p <workers>`` needs perf and the right to trace the
server (root, or ``kernel.perf_event_paranoid`` <= 1 with the tracepoints readable); without it the part is
skipped and the report says why.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENTS = ("raw_syscalls:sys_enter", "context-switches")
ATTACH_SECONDS = 0.3  # perf is counting before the block's first request


def unavailable() -> str | None:
    """Why system calls cannot be counted here, or None."""
    if shutil.which("perf") is None:
        return "perf not found (Debian: apt-get install linux-perf)"
    done = subprocess.run(
        ["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "--", "true"], capture_output=True, text=True, timeout=30
    )
    counts = parse_csv(done.stderr)
    if done.returncode or set(counts) != set(EVENTS):
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        return f"perf cannot count {', '.join(EVENTS)} here ({first[:160]})"
    return None


def parse_csv(text: str) -> dict[str, int]:
    """perf stat's CSV (``-x ,``): value, unit, event, ...; events it could not count are left out."""
    found = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2] in EVENTS and fields[0].strip().isdigit():
            found[fields[2]] = int(fields[0])
    return found


def counted(pids: list[int], action: Callable[[], Any]) -> tuple[dict[str, int], float, Any]:
    """Run ``action`` while perf counts the events of every thread of ``pids``: (counts, seconds, its result)."""
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as out:
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-o", out.name, "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(ATTACH_SECONDS)
            started = time.perf_counter()
            result = action()
            seconds = time.perf_counter() - started
        finally:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(timeout=30)
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait(timeout=10)
        counts = parse_csv(Path(out.name).read_text())
    # The counts include perf's attach time before the block and its stop after it (no traffic then): the
    # caller takes the idle rate out over ``seconds + ATTACH_SECONDS``.
    return counts, seconds + ATTACH_SECONDS, result


def measure(
    servers: dict[str, list[int]],
    paths: list[str],
    drive: Callable[[str, str], int],
    *,
    idle_seconds: float,
) -> dict[str, Any]:
    """For every server (``config -> worker pids``): the events with no traffic for ``idle_seconds``, then one block of
    each path (``drive(config, path)`` sends it and returns its operations)."""
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    result: dict[str, Any] = {"events": list(EVENTS), "servers": {}}
    for config, pids in servers.items():
        idle, idle_wall, _ = counted(pids, lambda: time.sleep(idle_seconds))
        blocks = {}
        for path in paths:
            counts, wall, operations = counted(pids, lambda config=config, path=path: drive(config, path))
            blocks[path] = {"counts": counts, "seconds": round(wall, 4), "operations": operations}
        result["servers"][config] = {"idle": {"counts": idle, "seconds": round(idle_wall, 4)}, "blocks": blocks}
    return result


def per_operation(server: dict[str, Any], path: str, event: str) -> tuple[float, float] | None:
    """(per operation with the idle rate over the block's time taken out, the idle rate per second)."""
    block = server["blocks"].get(path)
    if not block or not block["operations"] or event not in block["counts"]:
        return None
    rate = server["idle"]["counts"].get(event, 0) / max(1e-9, server["idle"]["seconds"])
    return (block["counts"][event] - rate * block["seconds"]) / block["operations"], rate


def table(measured: dict[str, Any], titles: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "path",
        "server",
        "system calls/op",
        "context switches/op",
        "no traffic: system calls/s",
        "no traffic: context switches/s",
    ]
    body = []
    servers = measured["servers"]
    paths = list(next(iter(servers.values()))["blocks"]) if servers else []
    for path in paths:
        for i, config in enumerate(servers):
            calls = per_operation(servers[config], path, EVENTS[0])
            switches = per_operation(servers[config], path, EVENTS[1])
            if calls is None or switches is None:
                continue
            body.append(
                [
                    f"**{path}**" if i == 0 else "",
                    titles[config],
                    f"{calls[0]:.1f}",
                    f"{switches[0]:.1f}",
                    f"{calls[1]:.0f}",
                    f"{switches[1]:.0f}",
                ]
            )
    return headers, body
