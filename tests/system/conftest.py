"""Real processes for system tests: gunicorn serving Bulwark against the stack in the environment.

`make test` exports the throwaway devstack's DATABASE_URL/REDIS_URL; these fixtures migrate that
database, load the demo catalog and start gunicorn (2 workers) on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_stop(process: subprocess.Popen, log: IO[bytes], *, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """Stop a helper process (``sig``, then SIGKILL after ``wait`` seconds) and close its log."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)


class Gunicorn:
    """A gunicorn master serving Bulwark; stopped (and its log shown on failure) by ``stop``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": env.get("WEB_CONCURRENCY", "2")}
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "settings.wsgi"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if requests.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or busy booting: ask again
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT}s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        process_stop(self.process, self.log, wait=25)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the server runs with its production settings module
    manage("migrate", "--noinput", env=env)
    manage("seed_demo", "-v", "0", env=env)
    return env


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    gunicorn = Gunicorn(stack_env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    yield gunicorn
    gunicorn.stop()
