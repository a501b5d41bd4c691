"""Where the layer's time goes: py-spy samples of a server's workers while one hot path runs on it.

For each path whose target a run missed, the ``off`` server and each server that missed it are sampled in turn
(``py-spy record --subprocesses --nonblocking --gil --format raw --full-filenames``: only the thread holding the
GIL, i.e. running Python, is sampled — a thread waiting for I/O, a lock, the GIL or a core is not) while the client
sends that path for ``--profile-seconds``. Each sample is one stack of one worker thread, and goes to exactly one
part (:func:`attribute`): walking from the innermost frame outwards, frames of the standard library and of the
clients a part calls (the cache and Redis, the operator's switches) are passed over, and the first other frame
decides — a part of the layer (:data:`GROUPS`, by file), the PostgreSQL client (psycopg: the queries themselves, on
either side), password hashing, the Prometheus client (the metrics every server keeps), or the rest (the app,
Django, DRF, gunicorn). A middleware's own frames therefore count for it, not the request it wraps. The report
gives each part's share of a server's samples, scaled by the run's measured app CPU per operation (samples are not
CPU time: a thread holding the GIL may still wait for the core). py-spy reads the workers' memory without stopping
them; its cost falls on every server alike. Without py-spy (``pip install py-spy``) nothing is profiled and the
report says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import say

RATE = 250  # samples per second per thread
GROUPS: dict[str, tuple[str, ...]] = {
    "routing, read-your-writes": (
        "/resilience/db/middleware.py",
        "/resilience/db/consistency.py",
        "/resilience/db/context.py",
        "/resilience/db/router.py",
        "/resilience/db/lsn.py",
    ),
    "node-aware engine": (
        "/resilience/db/backend/",
        "/resilience/observability/db_backend/",
        "/resilience/db/watchdog.py",
        "/resilience/db/nodes.py",
        "/resilience/db/trips.py",
    ),
    "rate limits": ("/resilience/ratelimit/", "/django_ratelimit/"),
    "serving layer": ("/resilience/serving/",),
    "monitor and snapshot threads": ("/resilience/db/monitor.py", "/resilience/health/workers.py"),
}
OTHER = {
    "PostgreSQL client (psycopg)": ("/psycopg/", "/psycopg_pool/"),
    "password hashing": ("/django/contrib/auth/hashers.py",),
    "metrics (Prometheus client)": ("/prometheus_client/", "/django_prometheus/"),
}
REST = "app, Django, DRF, gunicorn"
# Passed over: their time is their caller's (the standard library, and the clients a part calls).
NEUTRAL = (
    "/redis/",
    "/django_redis/",
    "/resilience/cache/",
    "/resilience/controls/",
    "/prometheus_client/",
    "/django_prometheus/",
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/)")


def _part(file: str) -> str | None:
    for name, parts in {**GROUPS, **OTHER}.items():
        if any(part in file for part in parts):
            return name
    if _STDLIB.search(file) or any(part in file for part in NEUTRAL) or file.startswith("<"):
        return None
    return REST


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def attribute(frames: list[str]) -> tuple[str, str]:
    """The part a stack's time goes to, and the frame that decided it (``file:function``)."""
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        if m is None:
            continue
        part = _part(m.group("file"))
        if part is not None:
            file = m.group("file")
            short = file.split("/site-packages/", 1)[-1].split("/work/main/", 1)[-1]
            return part, f"{short}:{m.group('func')}"
    return REST, ""


def parse(path: Path) -> dict[str, Any]:
    """The workers' samples of a raw py-spy file: total, per part, and the layer's top deciding frames."""
    total = 0
    groups: Counter[str] = Counter()
    top: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack.split(";")
        if sum(1 for f in frames if f.startswith("process ")) < 2:
            continue  # the master's own threads: not a worker's
        count = int(count_text)
        total += count
        part, frame = attribute(frames)
        groups[part] += count
        if part in GROUPS:
            top[f"{frame} ({part})"] += count
    return {"samples": total, "groups": dict(groups), "layer_top": top.most_common(10)}


def profile_one(binary: str, master: int, seconds: float, out: Path, drive: Callable[[], int]) -> dict[str, Any] | None:
    """Sample ``master``'s workers for about ``seconds`` while ``drive`` sends load; the parsed summary."""
    command = [
        binary,
        "record",
        "--pid",
        str(master),
        "--subprocesses",
        "--nonblocking",
        "--full-filenames",
        "--gil",
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--duration",
        str(int(seconds) + 2),
        "-o",
        str(out),
    ]
    log = out.with_suffix(".log").open("wb")
    spy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)  # attached to every worker before the load starts
        operations = drive()
        spy.wait(timeout=seconds + 30)
    except BaseException:
        spy.kill()
        spy.wait(timeout=10)
        raise
    finally:
        log.close()
    if spy.returncode != 0 or not out.exists():
        say(f"py-spy failed ({spy.returncode}); see {out.with_suffix('.log')}")
        return None
    summary = parse(out)
    summary["operations"] = operations
    return summary


def profile_paths(
    missed: list[tuple[str, str]],
    pids: dict[str, int],
    seconds: float,
    out: Path,
    driver: Callable[[str, float], Callable[[str], int]],
) -> dict[str, Any]:
    """Profile each missed path on ``off`` and on each server that missed it; keyed ``path:config``."""
    binary = py_spy()
    if binary is None:
        say("py-spy is not installed (pip install py-spy): no profile of the missed targets")
        return {"error": "py-spy not installed"}
    by_path: dict[str, list[str]] = {}
    for path, config in missed:
        by_path.setdefault(path, ["off"])
        if config not in by_path[path]:
            by_path[path].append(config)
    found: dict[str, Any] = {"rate": RATE, "seconds": seconds}
    for path, configs in by_path.items():
        drive = driver(path, seconds)
        for config in configs:
            say(f"profiling {path} on {config} ({seconds:g} s of py-spy)")
            file = out / f"profile-{path}-{config}.txt"
            summary = profile_one(binary, pids[config], seconds, file, lambda c=config, d=drive: d(c))
            if summary is not None:
                found[f"{path}:{config}"] = summary
    return found
