"""psycopg connections with a connection deadline shorter than 2 s.

libpq, and psycopg after it (``psycopg.conninfo.timeout_from_conninfo``), treats any ``connect_timeout`` below
2 s as 2 s. Against a hung server (the postmaster stopped: the kernel still completes the TCP handshake, then
nothing answers) a request that opens a connection just as the node hangs would wait those 2 s whatever is
configured. :class:`DeadlineConnection` bounds the connection attempt itself: it wraps psycopg's connection
generator (``_connect_gen``, driven by ``psycopg.waiting.wait_conn``, which resumes it at least every 0.1 s)
and gives up past the deadline with psycopg's own timeout, so ``connect`` raises its usual
``ConnectionTimeout``. psycopg is pinned (requirements.txt); ``tests/resilience/db/test_connect_deadline.py``
fails if a new version drives the generator differently.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import psycopg
from psycopg import errors

# Seconds a connection attempt may take in this context (None: psycopg's own connect_timeout, at least 2 s).
connect_deadline: ContextVar[float | None] = ContextVar("bulwark_connect_deadline", default=None)


class DeadlineConnection(psycopg.Connection):
    @classmethod
    def _connect_gen(cls, conninfo: str = "") -> Generator[Any, Any, Any]:
        inner = super()._connect_gen(conninfo)
        seconds = connect_deadline.get()
        if seconds is None:
            return (yield from inner)
        deadline = time.monotonic() + seconds
        try:
            wait = next(inner)
            while True:
                ready = yield wait
                if time.monotonic() >= deadline:
                    inner.close()
                    raise errors._WaitTimeout(f"no answer within {seconds:g}s")  # psycopg: ConnectionTimeout
                wait = inner.send(ready)
        except StopIteration as done:
            return done.value


class PsycopgWithDeadline:
    """The ``psycopg`` module as Django's backend uses it (``self.Database``), connecting through
    :class:`DeadlineConnection`."""

    def __init__(self, module: ModuleType = psycopg) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    @staticmethod
    def connect(*args: Any, **kwargs: Any) -> psycopg.Connection:
        return DeadlineConnection.connect(*args, **kwargs)
