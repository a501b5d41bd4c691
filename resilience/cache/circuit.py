"""The per-process circuit in front of one Redis: closed = use Redis, open = use process memory.

The first failed Redis call opens it (one timeout paid, then nothing more); a probe thread, started on that
first failure, PINGs Redis every ``interval`` seconds with the same short timeouts and closes the circuit
when Redis answers. Every change is logged on ``resilience.cache`` at WARNING with an ``event`` field, and
:meth:`RedisCircuit.snapshot` gives the state to the health layer. One circuit per Redis URL per process,
shared by every thread's cache object (Django builds one cache object per thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resilience.events import event_record

logger = logging.getLogger("resilience.cache")


# What "Redis failed" means: no connection, a timeout, or Redis refusing the command (READONLY after a failover,
# OOM, LOADING, NOAUTH...). A ValueError (incr of a missing key) or a DataError (a bad argument) is the caller's
# problem and passes through.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ResponseError,
    ConnectionInterrupted,
    OSError,
)


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RedisCircuit:
    """Thread-safe open/closed state for one Redis, with its recovery probe."""

    def __init__(self, name: str, probe: Callable[[], None], interval: float = 1.0) -> None:
        self.name = name  # host:port/db, never a password
        self.interval = interval
        self._probe = probe
        self._lock = threading.Lock()
        self._open = False
        self._forced = False
        self._changed_at = time.time()
        self._last_error = ""
        self._trips = 0
        self._probes_failed = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def is_open(self) -> bool:
        return self._open  # a plain read of a bool: no lock on the request path

    @property
    def trips(self) -> int:
        """How many times the circuit opened so far (a connection made before the last trip may point at a Redis
        that went away)."""
        return self._trips

    def trip(self, exc: BaseException, operation: str) -> None:
        """A Redis call failed: serve from memory from now on, and start probing (once)."""
        reason = describe_error(exc)
        with self._lock:
            if self._open:
                return
            self._open = True
            self._changed_at = time.time()
            self._last_error = reason
            self._trips += 1
            self._probes_failed = 0
            self._start_probe()
        logger.warning(
            "cache_redis_down: Redis %s failed on %s (%s); pid %d serves the cache and rate limits from process "
            "memory until a probe gets an answer",
            self.name,
            operation,
            reason,
            os.getpid(),
            extra={"event": "cache_redis_down", "redis": self.name, "operation": operation, "error": reason},
        )
        if not logger.disabled:  # silenced: a guard rail's scratch cache, failing on purpose
            event_record(
                "cache_redis_down",
                subject=self.name,
                severity="warning",
                message=f"Redis {self.name} failed on {operation} ({reason}): cache and rate limits in process memory",
                detail={"operation": operation, "error": reason},
            )

    def _start_probe(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._probe_loop, name="cache-redis-probe", daemon=True)
        self._thread.start()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._probe()
            except REDIS_FAILURES as exc:
                with self._lock:
                    self._probes_failed += 1
                    self._last_error = describe_error(exc)
                continue
            except Exception:  # a bug here must not leave the circuit open for good: say so, and keep probing
                logger.exception("cache probe of Redis %s failed unexpectedly", self.name)
                continue
            self._close()
            return

    def _close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            down_for = time.time() - self._changed_at
            self._changed_at = time.time()
            probes = self._probes_failed
        logger.warning(
            "cache_redis_up: Redis %s answers again after %.1f s (%d failed probes); pid %d counts in Redis "
            "again (counters kept in memory meanwhile are not merged back)",
            self.name,
            down_for,
            probes,
            os.getpid(),
            extra={"event": "cache_redis_up", "redis": self.name, "down_seconds": round(down_for, 3)},
        )
        if not logger.disabled:
            event_record(
                "cache_redis_up",
                subject=self.name,
                message=f"Redis {self.name} answers again after {down_for:.1f} s: cache and rate limits on Redis",
                detail={"down_seconds": round(down_for, 3), "failed_probes": probes},
            )

    def note_forced(self, forced: bool) -> None:
        """Log when the operator switch ``ratelimit.force_memory`` changes, as this process first sees it."""
        if forced == self._forced:
            return
        with self._lock:
            if forced == self._forced:
                return
            self._forced = forced
        event = "cache_forced_memory" if forced else "cache_force_released"
        logger.warning(
            "%s: operator switch ratelimit.force_memory is %s; pid %d uses %s",
            event,
            "on" if forced else "off",
            os.getpid(),
            "process memory" if forced else f"Redis {self.name} when it answers",
            extra={"event": event, "redis": self.name},
        )

    def stop(self) -> None:
        """Stop the probe thread (tests)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self.interval + 5)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "redis": self.name,
                "breaker": "open" if self._open else "closed",
                "forced_memory": self._forced,
                "since": self._changed_at,
                "last_error": self._last_error,
                "trips": self._trips,
                "failed_probes": self._probes_failed,
            }


_circuits: dict[str, RedisCircuit] = {}
_circuits_lock = threading.Lock()


def circuit_for(location: str, factory: Callable[[], RedisCircuit]) -> RedisCircuit:
    """This process's circuit for ``location`` (one per Redis URL), built on first use."""
    circuit = _circuits.get(location)
    if circuit is None:
        with _circuits_lock:
            circuit = _circuits.get(location)
            if circuit is None:
                circuit = _circuits[location] = factory()
    return circuit


def reset_circuits() -> None:
    """Forget every circuit, stopping their probes (tests)."""
    with _circuits_lock:
        circuits = list(_circuits.values())
        _circuits.clear()
    for circuit in circuits:
        circuit.stop()
