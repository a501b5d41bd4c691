"""System tests for devstack: a real PostgreSQL primary + streaming replica + Redis on three free loopback ports.

No Django needed. The module shares one throwaway stack (built once: ``up`` is the slow part), but no test
relies on another having run: the ``stack`` fixture brings it into the same state before every test -- built
if it is down, rebuilt if a test failed it over, every node running and resumed, the replica streaming with no
apply delay, and an empty ``devstack_t`` table that the replica has replayed. A sequence that belongs together
(kill -> start, hang -> resume, promote -> up) is one test. The stack's name carries the pytest process id and
its ports are picked free at run time, so two runs (``make test`` and a run of this file) never share a stack.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from devstack import DevstackError, Stack, throttle
from devstack.procs import alive, descendants, port_in_use, stopped

PREFIX = "pytest-devstack-"
NAME = f"{PREFIX}{os.getpid()}"
BUSY_NAME = f"{PREFIX}busy-{os.getpid()}"
# Above the kernel's ephemeral range (32768-60999), so no client socket squats on a port between the pick and
# the stack's start; and above the fixed bases of the benches (61000-61202), the system tests (62400-62730)
# and the dev/test stacks (63432, 63532), so a stack of this file never takes theirs.
PORT_RANGE = range(64000, 65000 - 2)
ROOT = Path(__file__).resolve().parents[2]


def free_port_base() -> int:
    """A base N with N, N+1, N+2 all free on loopback right now (tried by binding each)."""
    bases = list(PORT_RANGE)
    random.shuffle(bases)  # two runs starting together do not both try the same base first
    for base in bases:
        if not any(port_in_use(base + i) for i in range(3)):
            return base
    pytest.fail(f"no three consecutive free ports in {PORT_RANGE.start}-{PORT_RANGE.stop + 1}")


def sweep_leftovers() -> None:
    """Take down the stacks of earlier runs of this file whose pytest process is gone (killed, not torn down)."""
    for state_dir in (ROOT / ".stack").glob(f"{PREFIX}*"):
        pid = state_dir.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            with suppress(DevstackError):
                Stack(name=state_dir.name, echo=lambda m: None).down()


@pytest.fixture(scope="module")
def notes() -> list[str]:
    return []


@pytest.fixture(scope="module")
def shared_stack(notes: list[str]) -> Iterator[Stack]:
    sweep_leftovers()
    s = Stack(name=NAME, port_base=free_port_base(), echo=notes.append)
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture
def stack(shared_stack: Stack, notes: list[str]) -> Stack:
    """The shared stack in its start state (see the module docstring), whatever the tests before did to it."""
    s = shared_stack
    if s.status()["replica"]["recorded_role"] != "replica":
        s.down()  # failed over: `up` keeps the promoted node as the primary, only a rebuild gives a pair again
    s.up()  # starts what is down, resumes what is hung, waits for streaming
    s.set_apply_delay(0)
    env = s.env()
    query(env["DATABASE_URL"], "drop table if exists devstack_t")
    query(env["DATABASE_URL"], "create table devstack_t (id serial primary key, v text)")
    wait_for(lambda: query(env["DATABASE_REPLICA_URLS"], "select count(*) from devstack_t") == [(0,)], timeout=5)
    notes.clear()
    return s


def cli(*args: str, name: str = NAME) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", "--name", name, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def connect(url: str, connect_timeout: int = 5) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout)


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with connect(url) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> float:
    """Poll until predicate() is true; return the elapsed seconds (fail the test on timeout)."""
    t0 = time.monotonic()

    def check() -> bool:
        try:
            return predicate()
        except psycopg.errors.UndefinedTable:  # the CREATE TABLE has not been replayed yet
            return False

    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - t0


def test_up_is_idempotent(stack: Stack) -> None:
    env = stack.up()
    assert env == stack.env()
    status = stack.status()
    assert {n: s["running"] for n, s in status.items()} == {"primary": True, "replica": True, "redis": True}
    assert status["primary"]["role"] == "primary" and status["primary"]["replicas_streaming"] == 1
    assert status["replica"]["role"] == "replica" and status["replica"]["streaming"] is True
    assert status["redis"]["responding"] is True

    proc = cli("up")
    assert proc.returncode == 0, proc.stderr
    assert f"DATABASE_URL={shlex.quote(env['DATABASE_URL'])}" in proc.stdout.splitlines()
    assert stat.S_IMODE(os.stat(stack.state_file).st_mode) == 0o600
    assert cli("status").returncode == 0


def test_env_and_logins(stack: Stack) -> None:
    env = stack.env()
    p, r, rd = stack.port_base, stack.port_base + 1, stack.port_base + 2
    pw = env["DATABASE_URL"].split(":")[2].split("@")[0]
    assert len(pw) >= 20
    assert env["DATABASE_URL"] == f"postgres://bulwark:{pw}@127.0.0.1:{p}/bulwark"
    assert env["DATABASE_REPLICA_URLS"] == f"postgres://bulwark:{pw}@127.0.0.1:{r}/bulwark"
    assert env["DATABASE_URL_MULTIHOST"] == (
        f"postgres://bulwark:{pw}@127.0.0.1:{p},127.0.0.1:{r}/bulwark?target_session_attrs=read-write"
    )
    assert env["REDIS_URL"] == f"redis://127.0.0.1:{rd}/0"
    assert (env["DEVSTACK_NAME"], env["DEVSTACK_PRIMARY_PORT"]) == (NAME, str(p))
    assert (env["DEVSTACK_REPLICA_PORT"], env["DEVSTACK_REDIS_PORT"]) == (str(r), str(rd))

    assert query(env["DATABASE_URL"], "select current_user, current_database(), pg_is_in_recovery()") == [
        ("bulwark", "bulwark", False)
    ]
    assert query(env["DATABASE_REPLICA_URLS"], "select current_user, pg_is_in_recovery()") == [("bulwark", True)]
    assert query(env["DATABASE_URL_MULTIHOST"], "select inet_server_port()") == [(p,)]
    with socket.create_connection(("127.0.0.1", rd), timeout=2) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")

    # `env` on the CLI prints exactly these values, shell-sourceable.
    proc = cli("env")
    assert proc.returncode == 0, proc.stderr
    parsed = dict(shlex.split(line)[0].split("=", 1) for line in proc.stdout.splitlines())
    assert parsed == env


def test_replication_streams_rows(stack: Stack) -> None:
    env = stack.env()
    query(env["DATABASE_URL"], "insert into devstack_t (v) values ('hello')")
    wait_for(lambda: query(env["DATABASE_REPLICA_URLS"], "select v from devstack_t") == [("hello",)], timeout=5)
    # psql() helper: superuser over the unix socket, unaligned output.
    assert stack.psql("replica", "select count(*), pg_is_in_recovery() from devstack_t") == "1|t"


def test_kill_primary_then_start(stack: Stack, notes: list[str]) -> None:
    env = stack.env()
    query(env["DATABASE_URL"], "insert into devstack_t (v) values ('hello')")
    # synchronous_commit=off: a commit may still sit in WAL buffers; once replicated it is written and survives.
    wait_for(lambda: query(env["DATABASE_REPLICA_URLS"], "select v from devstack_t") == [("hello",)], timeout=5)
    pid = stack.status()["primary"]["pid"]
    stack.kill("primary")
    assert not alive(pid)
    assert stack.status()["primary"]["running"] is False
    proc = cli("status")
    assert proc.returncode != 0 and "DOWN" in proc.stdout
    with pytest.raises(psycopg.OperationalError):
        connect(env["DATABASE_URL"], connect_timeout=2)

    stack.start("primary")
    assert any("stale" in n for n in notes), notes
    assert query(env["DATABASE_URL"], "select v from devstack_t") == [("hello",)]  # crash recovery kept it
    stack.wait_streaming(timeout=15)
    query(env["DATABASE_URL"], "insert into devstack_t (v) values ('after-crash')")
    wait_for(lambda: len(query(env["DATABASE_REPLICA_URLS"], "select v from devstack_t")) == 2, timeout=5)
    assert cli("status").returncode == 0


def test_shared_memory_stays_in_the_data_dirs_across_a_kill(stack: Stack) -> None:
    """dynamic_shared_memory_type = mmap: segments are files in each node's pg_dynshmem/, never /dev/shm/PostgreSQL.*

    Those files cannot be told apart by name or owner (the machine's PostgreSQL and other stacks make theirs
    there at any time), so the check is what our nodes' own processes map, by /proc/<pid>/maps: a segment in
    the data dir, none in /dev/shm/PostgreSQL.*; and a restart after kill -9 clears the dead node's segments.
    """

    def segments(node: str) -> set[str]:
        return set(stack.psql(node, "select f from pg_ls_dir('pg_dynshmem') as f where f like 'mmap.%'").split())

    def mapped_files(node: str) -> set[str]:
        pid = stack.status()[node]["pid"]
        files = set()
        for p in [pid, *(d.pid for d in descendants(pid))]:
            with suppress(FileNotFoundError, ProcessLookupError):  # a backend may exit meanwhile
                files |= {line.split()[-1] for line in Path(f"/proc/{p}/maps").read_text().splitlines() if "/" in line}
        return files

    def check(node: str) -> set[str]:
        assert stack.psql(node, "show dynamic_shared_memory_type") == "mmap"
        own = segments(node)
        mapped = mapped_files(node)
        in_data_dir = {Path(f).name for f in mapped if "/pg_dynshmem/" in f}
        assert in_data_dir and in_data_dir <= own, (own, mapped)
        assert not [f for f in mapped if f.startswith("/dev/shm/PostgreSQL.")], mapped
        return own

    check("replica")
    before = check("primary")
    stack.kill("primary")
    stack.start("primary")
    after = check("primary")
    assert not before & after  # the start after the crash removed the killed postmaster's segments
    stack.wait_streaming(timeout=15)
    check("replica")


def test_hang_and_resume_replica(stack: Stack) -> None:
    env = stack.env()
    pid = stack.status()["replica"]["pid"]
    kids = [p.pid for p in descendants(pid)]
    assert kids
    stack.hang("replica")
    assert stopped(pid) and all(stopped(k) for k in kids)
    assert stack.status()["replica"]["hung"] is True
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(env["DATABASE_REPLICA_URLS"], connect_timeout=2)
    assert time.monotonic() - t0 >= 1.5  # a timeout, not a refused connection
    stack.resume("replica")
    assert not stopped(pid) and not any(stopped(k) for k in kids if alive(k))
    assert query(env["DATABASE_REPLICA_URLS"], "select 1") == [(1,)]
    stack.wait_streaming(timeout=15)


def select1_median(url: str, tries: int = 20) -> float:
    """Median ``SELECT 1`` round trip on one connection, the tries spaced at random (a duty cycle is sampled, not
    the run window of one period: back-to-back queries would all fit in one)."""
    with connect(url) as conn:
        times = []
        for _ in range(tries):
            time.sleep(random.uniform(0.01, 0.05))
            t0 = time.perf_counter()
            conn.execute("select 1").fetchall()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def slowed_entry(stack: Stack, node: str) -> dict | None:
    """What ``state.json`` records of the node's slow cycler (None when it records none)."""
    return json.loads(stack.state_file.read_text()).get("slowed", {}).get(node)


def family(stack: Stack, node: str) -> list[int]:
    pid = stack.status()[node]["pid"]
    return [pid, *(p.pid for p in descendants(pid))] if node != "redis" else [pid]


def never_stopped(pids: list[int], seconds: float = 0.5) -> bool:
    """Sampled every few ms for ``seconds``: no process of ``pids`` is ever in state T (stopped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(stopped(p) for p in pids):
            return False
        time.sleep(0.003)
    return True


def test_slow_replica_answers_slowly_until_resumed(stack: Stack) -> None:
    url = stack.env()["DATABASE_REPLICA_URLS"]
    normal = select1_median(url)
    stack.slow("replica", duty=0.8)
    entry = slowed_entry(stack, "replica")
    assert entry and alive(entry["pid"]) and alive(entry["guardian"])
    assert (entry["duty"], entry["period"]) == (0.8, 0.1)
    slowed = select1_median(url)
    assert slowed > 3 * normal and slowed > 0.005, (normal, slowed)
    with connect(url) as conn:  # a backend forked while the cycle runs is stopped too
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        wait_for(lambda: stopped(backend), timeout=5, interval=0.002)

    stack.resume("replica")
    assert not alive(entry["pid"]) and not alive(entry["guardian"])
    assert throttle.find(f"{stack.run_dir}/replica") == [] and slowed_entry(stack, "replica") is None
    assert never_stopped(family(stack, "replica"))
    back = select1_median(url)
    assert back < max(3 * normal, 0.01), (normal, slowed, back)
    stack.wait_streaming(timeout=15)


def test_slow_cli_and_a_killed_cycler_never_leaves_the_node_stopped(stack: Stack) -> None:
    proc = cli("slow", "replica", "--duty", "0.9", "--period", "0.05")
    assert proc.returncode == 0, proc.stderr
    entry = slowed_entry(stack, "replica")
    assert entry and (entry["duty"], entry["period"]) == (0.9, 0.05)
    pid = stack.status()["replica"]["pid"]
    wait_for(lambda: stopped(pid), timeout=2, interval=0.002)

    os.kill(entry["pid"], signal.SIGKILL)  # no chance to clean up: its guardian does it
    wait_for(lambda: not alive(entry["guardian"]), timeout=5)
    assert never_stopped(family(stack, "replica"))
    assert query(stack.env()["DATABASE_REPLICA_URLS"], "select 1") == [(1,)]
    proc = cli("resume", "replica")
    assert proc.returncode == 0, proc.stderr
    assert slowed_entry(stack, "replica") is None

    for bad in (["--duty", "1"], ["--duty", "0"], ["--period", "0"]):
        proc = cli("slow", "replica", *bad)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert slowed_entry(stack, "replica") is None and never_stopped([pid], 0.1)


def test_up_start_stop_hang_and_down_end_a_slow_node_and_leave_it_running(stack: Stack) -> None:
    stack.slow("redis")
    cycler = slowed_entry(stack, "redis")["pid"]
    stack.up()
    assert not alive(cycler) and never_stopped(family(stack, "redis"))
    assert stack.status()["redis"]["responding"] is True

    stack.slow("primary")
    cycler = slowed_entry(stack, "primary")["pid"]
    stack.start("primary")  # already running: only the cycle ends
    assert not alive(cycler) and never_stopped(family(stack, "primary"))

    stack.slow("replica")
    stack.slow("replica", duty=0.5)  # replaces the cycle
    entry = slowed_entry(stack, "replica")
    assert entry["duty"] == 0.5 and len(throttle.find(f"{stack.run_dir}/replica")) == 2  # cycler + guardian
    stack.hang("replica")  # the cycle ends; the node stays stopped, as hang leaves it
    assert not alive(entry["pid"]) and all(stopped(p) for p in family(stack, "replica"))
    with pytest.raises(DevstackError, match="resume it"):
        stack.slow("replica")
    stack.resume("replica")

    stack.slow("replica")
    cycler = slowed_entry(stack, "replica")["pid"]
    stack.stop("replica")  # a clean stop (it waits for the node to finish, which a stopped node never does)
    assert not alive(cycler) and stack.status()["replica"]["running"] is False
    stack.start("replica")

    stack.slow("replica")
    cycler = slowed_entry(stack, "replica")["pid"]
    pids = family(stack, "replica")
    stack.down()
    assert not alive(cycler) and throttle.find(f"{stack.run_dir}/replica") == []
    assert not any(alive(p) or stopped(p) for p in pids)


def test_apply_delay(stack: Stack) -> None:
    env = stack.env()
    stack.set_apply_delay(2)
    assert stack.psql("replica", "show recovery_min_apply_delay") == "2s"
    query(env["DATABASE_URL"], "insert into devstack_t (v) values ('delayed')")
    t0 = time.monotonic()

    def visible() -> bool:
        return query(env["DATABASE_REPLICA_URLS"], "select count(*) from devstack_t where v = 'delayed'") == [(1,)]

    time.sleep(0.5)
    assert not visible()
    wait_for(visible, timeout=10)
    assert time.monotonic() - t0 >= 1.5
    stack.set_apply_delay(0)
    assert stack.psql("replica", "show recovery_min_apply_delay") == "0"


def test_promote(stack: Stack) -> None:
    old = stack.env()
    replica_url = old["DATABASE_REPLICA_URLS"]
    for v in ("one", "two", "three"):
        query(old["DATABASE_URL"], "insert into devstack_t (v) values (%s)", (v,))
    # Replication is asynchronous: promote only once the replica has every row, as the count below expects.
    wait_for(lambda: query(replica_url, "select count(*) from devstack_t") == [(3,)], timeout=5)
    stack.promote()
    assert query(replica_url, "select pg_is_in_recovery()") == [(False,)]
    query(replica_url, "insert into devstack_t (v) values ('written-on-promoted')")
    assert query(replica_url, "select count(*) from devstack_t") == [(4,)]
    status = stack.status()
    assert status["replica"]["role"] == "primary"
    new = stack.env()
    assert new["DATABASE_URL"] == replica_url and new["DATABASE_REPLICA_URLS"] == ""
    assert new["DEVSTACK_PRIMARY_PORT"] == str(stack.port_base + 1)
    with pytest.raises(DevstackError, match="no replica left"):
        stack.promote()
    # After a failover, `up` keeps the new primary and never turns the old one into a second primary.
    stack.kill("primary")
    assert stack.up()["DATABASE_URL"] == replica_url
    assert stack.status()["primary"]["running"] is False


def test_busy_port_is_a_clear_error() -> None:
    busy_base = free_port_base()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", busy_base))
        blocker.listen()
        busy = Stack(name=BUSY_NAME, port_base=busy_base, echo=lambda m: None)
        try:
            with pytest.raises(DevstackError) as err:
                busy.up()
            msg = str(err.value)
            assert str(busy_base) in msg and "--port-base" in msg and "in use" in msg
            proc = cli("--port-base", str(busy_base), "up", name=BUSY_NAME)
            assert proc.returncode == 1
            assert "Traceback" not in proc.stderr and str(busy_base) in proc.stderr
        finally:
            busy.down()
        assert not busy.run_dir.exists() and not busy.state_dir.exists()


def test_cli_errors_are_one_paragraph() -> None:
    proc = cli("up", name="bad/name")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "invalid stack name" in proc.stderr
    proc = cli("env", name=f"{PREFIX}never")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "up" in proc.stderr


def test_down_removes_everything(stack: Stack) -> None:
    pids = [s["pid"] for s in stack.status().values() if s["pid"]]
    assert pids
    stack.down()
    assert not any(alive(pid) for pid in pids)
    assert not stack.run_dir.exists() and not stack.state_dir.exists()
    assert not any(port_in_use(stack.port_base + i) for i in range(3))
    assert not any(s["running"] for s in stack.status().values())
    stack.down()  # harmless when nothing runs
    assert cli("status").returncode != 0
    proc = cli("env")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    with pytest.raises(DevstackError):
        stack.env()
