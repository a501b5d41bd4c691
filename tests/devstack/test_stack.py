"""System tests for devstack: a real PostgreSQL primary + streaming replica + Redis on ports 63632-63634.

No Django needed. The whole module shares one throwaway stack (tests run in file order and build on each
other: kill -> start, hang -> resume, delay, promote, down). The fixture always calls ``down()``.
"""

from __future__ import annotations

import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devstack import DevstackError, Stack
from devstack.procs import alive, descendants, port_in_use, stopped

NAME = "pytest-devstack"
PORT_BASE = 63632
BUSY_PORT_BASE = 63642
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def notes() -> list[str]:
    return []


@pytest.fixture(scope="module")
def stack(notes: list[str]) -> Iterator[Stack]:
    s = Stack(name=NAME, port_base=PORT_BASE, echo=notes.append)
    s.down()  # leftovers of an interrupted earlier run
    try:
        s.up()
        yield s
    finally:
        s.down()


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
    p, r, rd = PORT_BASE, PORT_BASE + 1, PORT_BASE + 2
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
    query(env["DATABASE_URL"], "create table devstack_t (id serial primary key, v text)")
    query(env["DATABASE_URL"], "insert into devstack_t (v) values ('hello')")
    wait_for(lambda: query(env["DATABASE_REPLICA_URLS"], "select v from devstack_t") == [("hello",)], timeout=5)
    # psql() helper: superuser over the unix socket, unaligned output.
    assert stack.psql("replica", "select count(*), pg_is_in_recovery() from devstack_t") == "1|t"


def test_kill_primary_then_start(stack: Stack, notes: list[str]) -> None:
    env = stack.env()
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
    stack.promote()
    replica_url = old["DATABASE_REPLICA_URLS"]
    assert query(replica_url, "select pg_is_in_recovery()") == [(False,)]
    query(replica_url, "insert into devstack_t (v) values ('written-on-promoted')")
    assert query(replica_url, "select count(*) from devstack_t") == [(4,)]
    status = stack.status()
    assert status["replica"]["role"] == "primary"
    new = stack.env()
    assert new["DATABASE_URL"] == replica_url and new["DATABASE_REPLICA_URLS"] == ""
    assert new["DEVSTACK_PRIMARY_PORT"] == str(PORT_BASE + 1)
    with pytest.raises(DevstackError, match="no replica left"):
        stack.promote()
    # After a failover, `up` keeps the new primary and never turns the old one into a second primary.
    stack.kill("primary")
    assert stack.up()["DATABASE_URL"] == replica_url
    assert stack.status()["primary"]["running"] is False


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", BUSY_PORT_BASE))
        blocker.listen()
        busy = Stack(name="pytest-devstack-busy", port_base=BUSY_PORT_BASE, echo=lambda m: None)
        try:
            with pytest.raises(DevstackError) as err:
                busy.up()
            msg = str(err.value)
            assert str(BUSY_PORT_BASE) in msg and "--port-base" in msg and "in use" in msg
            proc = cli("--port-base", str(BUSY_PORT_BASE), "up", name="pytest-devstack-busy")
            assert proc.returncode == 1
            assert "Traceback" not in proc.stderr and str(BUSY_PORT_BASE) in proc.stderr
        finally:
            busy.down()
        assert not busy.run_dir.exists() and not busy.state_dir.exists()


def test_cli_errors_are_one_paragraph() -> None:
    proc = cli("up", name="bad/name")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "invalid stack name" in proc.stderr
    proc = cli("env", name="pytest-devstack-never")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "up" in proc.stderr


def test_down_removes_everything(stack: Stack) -> None:
    pids = [s["pid"] for s in stack.status().values() if s["pid"]]
    assert pids
    stack.down()
    assert not any(alive(pid) for pid in pids)
    assert not stack.run_dir.exists() and not stack.state_dir.exists()
    assert not any(port_in_use(PORT_BASE + i) for i in range(3))
    assert not any(s["running"] for s in stack.status().values())
    stack.down()  # harmless when nothing runs
    assert cli("status").returncode != 0
    proc = cli("env")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    with pytest.raises(DevstackError):
        stack.env()
