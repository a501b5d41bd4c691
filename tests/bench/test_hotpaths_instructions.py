"""The hot-path bench's instruction counts (bench/hotpaths/instructions.py): callgrind's counts zeroed and dumped from
inside a running process through the shim, and the arithmetic that takes the background threads out of a block."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.hotpaths import instructions

SCRIPT = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.bench_dump.argtypes = [ctypes.c_char_p]
assert lib.bench_on_valgrind() == 1
def work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
work(1000)  # the loop's code warmed: only the iterations differ below
for label, n in (("small", 20_000), ("large", 60_000), ("small-again", 20_000)):
    lib.bench_zero()
    work(n)
    lib.bench_dump(label.encode())
"""


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    reason = instructions.unavailable()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("callgrind")
    shim = instructions.shim_build(directory)
    script = directory / "work.py"
    script.write_text(textwrap.dedent(SCRIPT))
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={directory}/callgrind.out.%p",
            sys.executable,
            str(script),
            str(shim),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = {}
    for dump in directory.glob("callgrind.out.*.*"):
        label, total = instructions.dump_read(dump)
        found[label] = total
    return found


def test_each_dump_counts_only_what_ran_since_the_zero(counted: dict[str, int]) -> None:
    assert set(counted) == {"small", "large", "small-again"}
    # The same work twice: the same count within a fraction of a percent (nothing else in the process ran).
    assert abs(counted["small"] - counted["small-again"]) / counted["small"] < 0.01
    # Three times the iterations: three times the count, give or take the dump's own fixed part.
    assert 2.8 < counted["large"] / counted["small"] < 3.2


def test_outside_valgrind_the_shim_does_nothing(tmp_path: Path) -> None:
    if instructions.unavailable():
        pytest.skip(instructions.unavailable())
    shim = instructions.shim_build(tmp_path)
    code = (
        "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.bench_zero(); lib.bench_dump(b'x'); "
        "print(lib.bench_on_valgrind())"
    )
    done = subprocess.run([sys.executable, "-c", code, str(shim)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def _server(idle: list[tuple[int, float]], blocks: list[tuple[str, int, float, int]]) -> dict:
    return {
        "idle": [{"instructions": i, "seconds": s} for i, s in idle],
        "blocks": [{"path": p, "operations": n, "wall": w, "instructions": i} for p, n, w, i in blocks],
        "log_events": {},
    }


def test_the_background_threads_are_taken_out_at_their_idle_rate() -> None:
    # 10 M/s with no traffic; a 4 s block of 100 operations counted 2,040 M: 40 M of it was the background.
    server = _server([(100_000_000, 10.0), (50_000_000, 5.0)], [("detail", 100, 4.0, 2_040_000_000)])
    figures = instructions.per_operation(server, "detail")
    assert figures is not None
    assert instructions.idle_rate(server) == pytest.approx(10e6)
    assert figures["background"] == pytest.approx(0.4e6)
    assert figures["net"] == pytest.approx(20e6)
    assert instructions.per_operation(server, "list") is None


def test_the_smallest_block_counts_and_the_fixed_cost_goes_back_at_the_cpu_rounds_rate() -> None:
    # off: 20.0 M per request; one block also reopened a connection (65 M: 0.65 M per request more).
    off_blocks = [("detail", 100, 2.0, 2_000_000_000), ("detail", 100, 2.0, 2_065_000_000)]
    off_blocks.append(("detail", 100, 2.0, 2_010_000_000))
    measured = {
        "paths": ["detail"],
        "servers": {
            "off": _server([(0, 10.0)], off_blocks),
            "on": _server([(100_000_000, 10.0)], [("detail", 100, 4.0, 2_140_000_000)]),
        },
    }
    headers, body = instructions.table(
        measured,
        {("off", "detail"): 100.0, ("on", "detail"): 100.0},
        2,
        {
            "off": "off",
            "on": "on",
        },
    )
    rows = {row[1]: dict(zip(headers, row, strict=True)) for row in body}
    # off: the smallest block, 20.0 M (median 20.1); on: 21.4 - 0.4 (4 s of 10 M/s over 100) = 21.0 M: 1.05 x off.
    assert rows["off"]["M instructions/op, requests alone"] == "20.00"
    assert rows["off"]["blocks' median"] == "20.10"
    assert rows["off"]["blocks' spread"] == "3.2%"
    assert rows["on"]["÷ off"] == "1.050"
    # The fixed cost at full speed: 10 M/s per worker x 2 workers / 100 operations a second = 0.2 M per operation.
    assert rows["on"]["fixed M/op at the CPU rounds' rate"] == "0.200"
    assert rows["on"]["with the fixed cost, ÷ off"] == f"{21.2 / 20.0:.3f}"
    assert instructions.ratios(measured, "on") == {"detail": pytest.approx(21.0 / 20.0)}
