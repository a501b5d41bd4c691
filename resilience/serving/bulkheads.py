"""Bulkheads: a concurrency limit per traffic class in each worker, so one class cannot take every thread.

Each class may have at most ``SERVING_LIMIT_<CLASS>`` requests in flight in a worker; the classes other than
``ops`` together at most ``threads - 1``, so one thread of every worker is always free for health probes and
metrics scrapes, whatever the per-class limits add up to. A request over a limit is refused at once
(``503 overloaded`` with ``Retry-After``): the bulkhead never queues. What waits is what gunicorn accepted but
no thread has picked up yet; with every class below its limit that wait is short.

No dependency: one lock per worker, taken twice per request (enter, leave). Written here: a bulkhead is a
counter under a lock, and none of the Python resilience libraries looked at (pybreaker, circuitbreaker,
purgatory, tenacity) has one; this one also shares the reserve across classes and counts what it sheds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from resilience.serving import metrics
from resilience.serving.classes import OPS, TRAFFIC_CLASSES

SHED_RECENT = 60.0  # seconds: a class that shed a request this recently is reported as overloaded


@dataclass
class ClassState:
    limit: int
    in_flight: int = 0
    peak: int = 0  # most in flight at once since the worker started
    admitted: int = 0
    shed: int = 0  # refused by this class's own limit
    shed_reserve: int = 0  # refused because the non-ops classes together held every thread but ops's
    timeouts: int = 0  # requests cut off by their time budget
    last_shed: float = 0.0  # time.time() of the last refusal (0: never)


class Permit:
    """A place in a class's bulkhead; :meth:`release` gives it back (once, however often it is called)."""

    __slots__ = ("_bulkheads", "_released", "traffic_class")

    def __init__(self, bulkheads: Bulkheads, traffic_class: str) -> None:
        self._bulkheads = bulkheads
        self.traffic_class = traffic_class
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._bulkheads._leave(self.traffic_class)


class Bulkheads:
    def __init__(self, limits: Mapping[str, int], threads: int, *, enabled: bool = True) -> None:
        self.threads = threads
        self.enabled = enabled  # False: counted, never refused (the undivided pool the benchmark compares with)
        self.shared_limit = max(1, threads - 1)  # every class but ops together
        self.shared_in_flight = 0
        self._lock = threading.Lock()
        self.classes = {name: ClassState(limit=limits[name]) for name in TRAFFIC_CLASSES}

    def enter(self, traffic_class: str) -> Permit | None:
        """A permit for one request of ``traffic_class``, or None when the class (or the shared reserve) is full."""
        state = self.classes[traffic_class]
        shares = traffic_class != OPS
        with self._lock:
            if self.enabled:
                if state.in_flight >= state.limit:
                    state.shed += 1
                    state.last_shed = time.time()
                    return None
                if shares and self.shared_in_flight >= self.shared_limit:
                    state.shed_reserve += 1
                    state.last_shed = time.time()
                    return None
            state.in_flight += 1
            state.admitted += 1
            state.peak = max(state.peak, state.in_flight)
            if shares:
                self.shared_in_flight += 1
        return Permit(self, traffic_class)

    def _leave(self, traffic_class: str) -> None:
        with self._lock:
            self.classes[traffic_class].in_flight -= 1
            if traffic_class != OPS:
                self.shared_in_flight -= 1

    def timed_out(self, traffic_class: str) -> None:
        with self._lock:
            self.classes[traffic_class].timeouts += 1

    def snapshot(self) -> dict[str, object]:
        """What the dashboard and the serving health area show (JSON-ready)."""
        now = time.time()
        with self._lock:
            classes = {
                name: {
                    "limit": state.limit,
                    "in_flight": state.in_flight,
                    "peak": state.peak,
                    "admitted": state.admitted,
                    "shed": state.shed + state.shed_reserve,
                    "shed_reserve": state.shed_reserve,
                    "timeouts": state.timeouts,
                    "shed_recently": bool(state.last_shed) and now - state.last_shed < SHED_RECENT,
                }
                for name, state in self.classes.items()
            }
            shared = {"limit": self.shared_limit, "in_flight": self.shared_in_flight}
        return {"enabled": self.enabled, "threads": self.threads, "shared": shared, "classes": classes}


_bulkheads: Bulkheads | None = None
_bulkheads_lock = threading.Lock()


def worker_bulkheads() -> Bulkheads:
    """This worker's bulkheads, built from the configuration on first use."""
    global _bulkheads
    if _bulkheads is None:
        with _bulkheads_lock:
            if _bulkheads is None:
                from django.conf import settings

                serving = settings.BULWARK_CONFIG.serving
                _bulkheads = Bulkheads(
                    serving.limits, serving.threads, enabled=getattr(settings, "SERVING_BULKHEADS", True)
                )
                for name, limit in serving.limits.items():
                    metrics.LIMIT.labels(name).set(limit)
    return _bulkheads


def worker_bulkheads_reset() -> None:
    """Forget this worker's bulkheads (tests that change the configuration)."""
    global _bulkheads
    with _bulkheads_lock:
        _bulkheads = None
