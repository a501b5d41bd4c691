"""Real Redis failures for unit tests: a redis-server of our own to kill and restart, a hung one, a dead address.

Nothing here imitates Redis: ``RedisProcess`` is the real server (the binary devstack uses); ``HungRedis`` is a
TCP listener that completes the handshake (the kernel does) and never answers, which is what a client sees of a
stopped or wedged server; ``dead_redis_url`` is a loopback port where nothing listens (refused at once).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from contextlib import suppress

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

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [find_redis(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
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
