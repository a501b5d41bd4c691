"""bench/hotpaths' fixed-cost reading: the CPU per second of a server's workers (the master's children), from every
thread's schedstat -- a busy worker shows, a sleeping one does not."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.hotpaths.load import idle_cpu

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"
ASLEEP = "import time; time.sleep(30)"


@pytest.fixture
def server() -> Iterator[object]:
    """``server(code)``: a "master" process whose one child (its "worker") runs ``code``."""
    started: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        master = subprocess.Popen(
            [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"]
        )
        started.append(master)
        time.sleep(1.0)  # the worker is running
        return master

    yield start
    for process in started:
        subprocess.run(["pkill", "-P", str(process.pid)], check=False)
        process.kill()
        process.wait()


def test_a_busy_worker_shows_and_a_sleeping_one_does_not(server) -> None:
    busy = idle_cpu(server(BUSY).pid, 0.5)
    asleep = idle_cpu(server(ASLEEP).pid, 0.5)
    assert busy["workers"] == asleep["workers"] == 1
    assert busy["cpu_ms_per_s"] > 200  # one thread spinning: up to 1000 ms/s, less on a loaded machine
    assert asleep["cpu_ms_per_s"] < 50
