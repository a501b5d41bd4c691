"""The hot-path bench's kernel-side counts (bench/hotpaths/syscalls.py): perf counts another process's system calls
over exactly what the caller runs, and the idle rate is taken out per operation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.hotpaths import syscalls

CHILD = """
import os, sys
for line in sys.stdin:
    for _ in range(int(line)):
        os.getpid()  # one system call each
    print("done", flush=True)
"""


def test_perf_counts_the_system_calls_another_process_makes_meanwhile() -> None:
    reason = syscalls.unavailable()
    if reason:
        pytest.skip(reason)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:

        def calls(n: int) -> str:
            child.stdin.write(f"{n}\n")
            child.stdin.flush()
            return child.stdout.readline().strip()

        assert calls(10) == "done"  # the child is up and past its imports
        counts, seconds, answer = syscalls.counted([child.pid], lambda: calls(20_000))
        assert answer == "done"
        assert seconds >= syscalls.ATTACH_SECONDS
        # 20,000 getpid()s plus the few reads and writes of the exchange itself.
        assert 20_000 <= counts["raw_syscalls:sys_enter"] < 20_500
        assert counts["context-switches"] >= 1  # the child slept on its stdin and was woken
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def test_the_idle_rate_is_taken_out_over_the_block_time() -> None:
    server = {
        "idle": {"counts": {"raw_syscalls:sys_enter": 200, "context-switches": 40}, "seconds": 2.0},
        "blocks": {
            "detail": {
                "counts": {"raw_syscalls:sys_enter": 5_300, "context-switches": 560},
                "seconds": 3.0,
                "operations": 100,
            }
        },
    }
    # 100 calls/s with no traffic: 300 of the block's 5,300 were the background's; 50 per operation remain.
    assert syscalls.per_operation(server, "detail", "raw_syscalls:sys_enter") == (50.0, 100.0)
    assert syscalls.per_operation(server, "detail", "context-switches") == (5.0, 20.0)
    assert syscalls.per_operation(server, "list", "context-switches") is None
    headers, body = syscalls.table({"servers": {"off": server}}, {"off": "off"})
    assert body == [["**detail**", "off", "50.0", "5.0", "100", "20"]]
    assert len(headers) == len(body[0])


def test_perf_csv_is_read_by_event_name() -> None:
    text = "# started on ...\n\n1234,,raw_syscalls:sys_enter,100.00,,\n<not counted>,,context-switches,0,,\n"
    assert syscalls.parse_csv(text) == {"raw_syscalls:sys_enter": 1234}
