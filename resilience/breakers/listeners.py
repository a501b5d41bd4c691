"""What every registered breaker reports: a structured log line and a resilience event per state change,
Prometheus metrics.

Logger ``resilience.breakers``: a change of state is a WARNING with ``extra`` fields ``event``
(``breaker_state_changed``), ``breaker``, ``from_state``, ``to_state`` and ``reason``.

Metrics, in prometheus_client's default registry (``/metrics``, every worker's: resilience/observability):

- ``bulwark_breaker_state{breaker, state}``: 1 for the state the breaker is in (closed, open, half_open), else 0
- ``bulwark_breaker_forced{breaker}``: 0 automatic, 1 forced open, 2 forced closed by an operator
- ``bulwark_breaker_transitions_total{breaker, from_state, to_state}``
- ``bulwark_breaker_calls_total{breaker, outcome}``: success, failure, excluded, rejected
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

from resilience.breakers.breaker import CircuitBreaker, Forced, Outcome, State
from resilience.events import event_record

logger = logging.getLogger("resilience.breakers")

# Live gauges, the highest over the workers (multiprocess mode): a dead worker's series go with it.
BREAKER_STATE = Gauge(
    "bulwark_breaker_state",
    "Circuit breaker state (1 = the current one; max over workers).",
    ["breaker", "state"],
    multiprocess_mode="livemax",
)
BREAKER_FORCED = Gauge(
    "bulwark_breaker_forced",
    "Operator override: 0 automatic, 1 forced open, 2 forced closed.",
    ["breaker"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "bulwark_breaker_transitions_total", "Circuit breaker state changes.", ["breaker", "from_state", "to_state"]
)
BREAKER_CALLS = Counter("bulwark_breaker_calls_total", "Calls through a circuit breaker.", ["breaker", "outcome"])
_FORCED_VALUE = {Forced.AUTOMATIC: 0, Forced.OPEN: 1, Forced.CLOSED: 2}


def _set_state(name: str, state: str) -> None:
    for candidate in State:
        BREAKER_STATE.labels(breaker=name, state=candidate.value).set(1 if candidate.value == state else 0)


class LoggingListener:
    def state_changed(self, breaker: CircuitBreaker, old: str, new: str, reason: str) -> None:
        level = logging.INFO if new == State.HALF_OPEN else logging.WARNING
        logger.log(
            level,
            "circuit breaker %s: %s -> %s (%s)",
            breaker.name,
            old,
            new,
            reason,
            extra={
                "event": "breaker_state_changed",
                "breaker": breaker.name,
                "from_state": old,
                "to_state": new,
                "reason": reason,
            },
        )

    def call_recorded(self, breaker: CircuitBreaker, outcome: Outcome) -> None:
        return None


class EventListener:
    """A state change in the durable event record (:mod:`resilience.events`): buffered, never a database call."""

    def state_changed(self, breaker: CircuitBreaker, old: str, new: str, reason: str) -> None:
        event_record(
            "breaker_state_changed",
            subject=breaker.name,
            severity="warning" if new == State.OPEN else "info",
            message=f"Circuit breaker {breaker.name}: {old} -> {new} ({reason})",
            detail={"from_state": old, "to_state": new, "reason": reason},
        )

    def call_recorded(self, breaker: CircuitBreaker, outcome: Outcome) -> None:
        return None


class MetricsListener:
    def __init__(self, breaker_name: str) -> None:
        _set_state(breaker_name, State.CLOSED.value)  # every registered breaker shows up from the start
        BREAKER_FORCED.labels(breaker=breaker_name).set(0)
        for outcome in Outcome:
            BREAKER_CALLS.labels(breaker=breaker_name, outcome=outcome.value)

    def state_changed(self, breaker: CircuitBreaker, old: str, new: str, reason: str) -> None:
        BREAKER_TRANSITIONS.labels(breaker=breaker.name, from_state=old, to_state=new).inc()
        _set_state(breaker.name, new)
        BREAKER_FORCED.labels(breaker=breaker.name).set(_FORCED_VALUE[breaker.forced_mode])

    def call_recorded(self, breaker: CircuitBreaker, outcome: Outcome) -> None:
        BREAKER_CALLS.labels(breaker=breaker.name, outcome=outcome.value).inc()
