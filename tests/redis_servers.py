"""Real Redis failures for unit tests: a redis-server of our own to kill and restart, a hung one, a dead address,
and a master + replica watched by three real Sentinels (``SentinelSet``) to fail over.

Nothing here imitates Redis: ``RedisProcess`` is the real server (the binary devstack uses); ``HungRedis`` is a
TCP listener that completes the handshake (the kernel does) and never answers, which is what a client sees of a
stopped or wedged server; ``dead_redis_url`` is a loopback port where nothing listens (refused at once).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path

import redis

from devstack.redis import find_redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def dead_redis_cache() -> dict:
    """A ``CACHES`` entry: a fallback cache of its own (its own process memory) at a Redis that is down."""
    return {
        "BACKEND": "resilience.cache.FallbackCache",
        "LOCATION": dead_redis_url(),
        "KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }


def stack_redis_url() -> str:
    """The test stack's Redis (exported by scripts/test.sh)."""
    url = os.environ.get("REDIS_URL")
    assert url, "REDIS_URL is not set: run the tests through scripts/test.sh (make test), which starts Redis"
    return url


class HungRedis:
    """Accepts connections (through the kernel's backlog) and never replies; ``connections()`` counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self._accepted: list[socket.socket] = []  # held open: closing one would answer the client (EOF)

    def connections(self) -> int:
        """Connections made to it so far (each completed handshake waits in the backlog until taken here)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return len(self._accepted)
            self._accepted.append(conn)

    def close(self) -> None:
        for conn in self._accepted:
            conn.close()
        self.sock.close()


class RedisProcess:
    """A throwaway redis-server on a free loopback port: ``kill()`` it (SIGKILL) and ``start()`` it again."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = list(extra)  # more redis-server arguments (e.g. --replicaof host port)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                *(find_redis(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--repl-diskless-sync-delay", "0", *self.extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def find_sentinel() -> str:
    found = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
    if not os.access(found, os.X_OK):
        raise RuntimeError("redis-sentinel is not installed (Debian's redis-sentinel; make test installs it)")
    return found


class SentinelSet:
    """A Redis master, its replica and three Sentinels (quorum 2) on free loopback ports, all real processes.

    ``down_after_ms`` is short (a failover takes about a second here) so a test can wait one out. Each Sentinel's
    config file is written fresh (Sentinels rewrite their own files).
    """

    def __init__(self, directory: Path, *, down_after_ms: int = 500) -> None:
        # Unique: django-redis keeps its connection pools in a class-level dict keyed by the location, so a second
        # set under the same name in one process would get the first one's pool (and its Sentinels).
        self.master_name = f"bulwark-test-{uuid.uuid4().hex[:8]}"
        # In the test's directory: a replica writes the master's snapshot to its working directory.
        self.master = RedisProcess("--dir", str(directory))
        self.replica = RedisProcess("--dir", str(directory), "--replicaof", "127.0.0.1", "")  # port set by start()
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.ports = [free_port() for _ in range(3)]
        self.sentinels = [("127.0.0.1", port) for port in self.ports]
        self._processes: list[subprocess.Popen] = []

    def start(self) -> None:
        self.master.start()
        self.replica.extra[-1] = str(self.master.port)
        self.replica.start()
        for port in self.ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            self._processes.append(
                subprocess.Popen([find_sentinel(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        self.wait_for(lambda: self.settled_on(self.master.port) and self._replica_known(), "a monitored master")

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it (None: none names one)."""
        for host, port in self.sentinels:
            with suppress(redis.RedisError):
                client = redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
                try:
                    address = client.sentinel_get_master_addr_by_name(self.master_name)
                finally:
                    client.close()
                return int(address[1]) if address else None
        return None

    def settled_on(self, port: int) -> bool:
        """Every Sentinel names ``port`` master and none sees it down (right after a failover they disagree for a
        few hundred ms, and redis-py's discovery then fails on the ones not caught up)."""
        for _, sentinel_port in self.sentinels:
            with suppress(redis.RedisError):
                client = redis.Redis(port=sentinel_port, socket_timeout=0.5, socket_connect_timeout=0.5)
                try:
                    state = client.sentinel_masters().get(self.master_name) or {}
                finally:
                    client.close()
                if int(state.get("port", 0)) == port and not state.get("is_sdown") and not state.get("is_odown"):
                    continue
            return False
        return True

    def _replica_known(self) -> bool:
        with suppress(redis.RedisError):
            client = redis.Redis(port=self.ports[0], socket_timeout=0.5)
            try:
                return bool(client.sentinel_slaves(self.master_name))
            finally:
                client.close()
        return False

    @staticmethod
    def wait_for(condition, what: str, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if condition():
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s")

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.replica.kill()
        self.master.kill()
