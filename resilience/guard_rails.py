"""Guard-rail checks for ``manage.py test_guard_rails``: each breaker and fallback, exercised safely.

A check is a function yielding ``(level, message)`` lines, level one of ``ok``, ``fail``, ``warn``, ``info``.
Checks never touch production state: breakers are tripped as scratch copies with the live configuration
(and a simulated clock instead of waiting out the reset timeout), the HTTP client is pointed at sockets
of our own on loopback, the database fallback is checked on a scratch node registry plus one read-only
probe of every node. A dependency that is down right now is a ``warn`` (the guard rail handles it), not a
``fail``; ``fail`` means a guard rail itself does not work.

Apps add their own checks with :func:`guard_rail_register` from ``AppConfig.ready()`` (the shop registers
the payment fallback). The rate-limit store is checked with a scratch fallback cache at a hung Redis address.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress

from django.conf import settings

from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError, Forced, State
from resilience.breakers.exceptions import ExternalClientError, ExternalServerError, ExternalServiceUnavailable
from resilience.breakers.http import GuardedHttpClient
from resilience.breakers.registry import breaker_config, breaker_get

Line = tuple[str, str]
GuardRail = Callable[[], Iterable[Line]]

_registered: dict[str, GuardRail] = {}
FAST = 0.05  # seconds: "at once"


def guard_rail_register(title: str, check: GuardRail) -> None:
    _registered[title] = check


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _synthetic_failure() -> None:
    raise ExternalServerError("guard-rail", 500, "synthetic failure")


def _declined() -> None:
    raise ExternalClientError("guard-rail", 402, "synthetic decline")


def _ok() -> str:
    return "ok"


def _refuses_at_once(breaker: CircuitBreaker) -> bool:
    called = []
    started = time.monotonic()
    try:
        breaker.call(lambda: called.append(1))
    except CircuitOpenError:
        return not called and time.monotonic() - started < FAST
    return False


def _trip(breaker: CircuitBreaker, config: BreakerConfig) -> None:
    for _ in range(config.failure_threshold):
        with suppress(ExternalServiceUnavailable, CircuitOpenError):
            breaker.call(_synthetic_failure)


def check_breaker(name: str) -> Iterator[Line]:
    """Trip a scratch copy of the breaker (same configuration) through every transition; report the live one."""
    config = breaker_config(name)
    clock = FakeClock()
    scratch = CircuitBreaker(f"{name}.guard_rail", config, exclude=(ExternalClientError,), clock=clock)

    for _ in range(config.failure_threshold + 1):
        with suppress(ExternalClientError):
            scratch.call(_declined)
    yield ("ok" if scratch.state is State.CLOSED else "fail", "a 4xx answer (e.g. card declined) never opens it")

    for _ in range(config.failure_threshold - 1):
        with suppress(ExternalServiceUnavailable):
            scratch.call(_synthetic_failure)
    still_closed = scratch.state is State.CLOSED
    _trip(scratch, config)
    opened = still_closed and scratch.state is State.OPEN
    yield ("ok" if opened else "fail", f"opens after {config.failure_threshold} consecutive failures")
    yield ("ok" if _refuses_at_once(scratch) else "fail", "open: refuses at once, without calling the dependency")

    clock.advance(config.reset_timeout)
    half_open = scratch.state is State.HALF_OPEN
    closed = half_open and scratch.call(_ok) == "ok" and scratch.state is State.CLOSED
    yield ("ok" if closed else "fail", f"after {config.reset_timeout:g}s a trial call goes through; success closes it")

    _trip(scratch, config)
    clock.advance(config.reset_timeout)
    with suppress(ExternalServiceUnavailable):
        scratch.call(_synthetic_failure)
    yield ("ok" if scratch.state is State.OPEN else "fail", "a failed trial opens it again")

    mode = {"value": Forced.OPEN}
    forced = CircuitBreaker(f"{name}.guard_rail_forced", config, forced_source=lambda: mode["value"], clock=clock)
    forced_open = _refuses_at_once(forced)
    mode["value"] = Forced.CLOSED
    _trip(forced, config)
    forced_closed = forced.call(_ok) == "ok"
    mode["value"] = Forced.AUTOMATIC
    automatic = forced.call(_ok) == "ok" and forced.state is State.CLOSED
    yield (
        "ok" if forced_open and forced_closed and automatic else "fail",
        "operator overrides: forced open refuses, forced closed always calls, automatic resumes",
    )

    live = breaker_get(name).snapshot()
    if live["forced"] != Forced.AUTOMATIC:
        yield ("warn", f"live breaker FORCED {live['forced'].upper()} by an operator (admin -> Operator controls)")
    elif live["state"] != State.CLOSED:
        yield ("warn", f"live breaker in this process: {live['state']} (last failure: {live['last_failure'] or '-'})")
    else:
        yield ("info", "live breaker in this process: closed, automatic")


def check_http_client() -> Iterator[Line]:
    """The guarded client gives up on a hung service at its read timeout and on a closed port at once."""
    read_timeout = 0.5
    with closing(socket.socket()) as hung, closing(socket.socket()) as closed_port:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # accepts connections (kernel backlog) and never answers: a hung service
        closed_port.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        breaker = CircuitBreaker("http.guard_rail", BreakerConfig(failure_threshold=2, reset_timeout=60))

        def client(sock: socket.socket) -> GuardedHttpClient:
            port = sock.getsockname()[1]
            return GuardedHttpClient(
                service="guard-rail",
                base_url=f"http://127.0.0.1:{port}",
                breaker=breaker,
                connect_timeout=1.0,
                read_timeout=read_timeout,
            )

        started = time.monotonic()
        with suppress(ExternalServiceUnavailable):
            client(hung).request("GET", "/")
        waited = time.monotonic() - started
        yield (
            "ok" if read_timeout <= waited < read_timeout + 1.0 else "fail",
            f"a hung service costs one read timeout ({waited:.2f}s for a {read_timeout:g}s timeout)",
        )
        started = time.monotonic()
        with suppress(ExternalServiceUnavailable):
            client(closed_port).request("GET", "/")
        waited = time.monotonic() - started
        yield ("ok" if waited < 1.0 else "fail", f"a refused connection fails at once ({waited:.2f}s)")
        yield (
            "ok" if breaker.state is State.OPEN and _refuses_at_once(breaker) else "fail",
            "the two failures opened its breaker: the next call does not touch the network",
        )


def check_database() -> Iterator[Line]:
    """Replica down -> reads go to the primary (scratch registry); then one read-only probe of every node."""
    from resilience.db.monitor import NodeMonitor
    from resilience.db.nodes import PRIMARY, registry

    replicas = [alias for alias in settings.DATABASES if alias != PRIMARY]
    if not replicas:
        yield ("warn", "no replica configured: reads have nowhere to go when the primary fails")
    else:
        with _quiet("resilience.db"):  # the scratch registry's "node down" lines would read like a real outage
            yield from _scratch_database(replicas)
    monitor = NodeMonitor(registry())
    try:
        monitor.probe_all()
    finally:
        for alias in list(monitor._connections):
            monitor._drop(alias)
    for alias, state in registry().snapshot().items():
        if state["reachable"]:
            lag = f", lag {state['lag_seconds']:.1f}s" if state["lag_seconds"] is not None else ""
            yield ("info", f"{alias} ({state['role']}) answers{lag}")
        else:
            yield ("warn", f"{alias} is down now: {state['last_error']} (the guard rail above is in effect)")


def _scratch_database(replicas: list[str]) -> Iterator[Line]:
    from resilience.db.nodes import PRIMARY, NodeRegistry

    scratch = NodeRegistry(replicas, max_lag_seconds=30)
    for alias in replicas:
        scratch.mark_down(alias, "guard rail: simulated failure")
    rerouted = scratch.readable_replicas() == [] and scratch.primary_available()
    scratch.record_probe(replicas[0], in_recovery=True, lag_seconds=0.0, lag_bytes=0, replay_lsn=None)
    back = replicas[0] in scratch.readable_replicas()
    yield ("ok" if rerouted else "fail", "replicas down: reads go to the primary, no timeout paid")
    yield ("ok" if back else "fail", "a replica found back by a probe returns to read rotation")
    scratch.mark_down(PRIMARY, "guard rail: simulated failure")
    yield (
        "ok" if not scratch.primary_available() and scratch.reachable_replicas() else "fail",
        "primary down: reads continue on a replica, writes answer 503 read_only_mode",
    )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    target = logging.getLogger(logger_name)
    was = target.disabled
    target.disabled = True
    try:
        yield
    finally:
        target.disabled = was


def check_cache() -> Iterator[Line]:
    """The rate-limit store falls back to memory: a scratch FallbackCache, with the live timeouts, at a Redis
    address that accepts connections and never answers (a hung Redis, the worst case)."""
    from resilience.cache import FallbackCache, cache_state

    options = settings.CACHES["default"].get("OPTIONS", {})
    budget = float(options.get("SOCKET_CONNECT_TIMEOUT", 0.25)) + float(options.get("SOCKET_TIMEOUT", 0.25)) + 0.5
    with closing(socket.socket()) as hung, _quiet("resilience.cache"):
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        location = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        scratch = FallbackCache(location, {"KEY_PREFIX": "guard-rail", "OPTIONS": {**options, "PROBE_INTERVAL": 60}})
        try:
            started = time.monotonic()
            scratch.add("count", 0, 60)
            first = time.monotonic() - started
            started = time.monotonic()
            scratch.incr("count")
            count = scratch.incr("count")
            later = time.monotonic() - started
            in_memory = scratch.uses_memory()
        finally:
            if scratch.circuit is not None:
                scratch.circuit.stop()
            scratch.close()
    yield (
        "ok" if in_memory and first <= budget else "fail",
        f"Redis hung: the first call fell back to memory in {first * 1000:.0f} ms (budget {budget * 1000:.0f} ms)",
    )
    yield (
        "ok" if count == 2 and later < 0.2 else "fail",
        f"later calls skip Redis ({later * 1000:.1f} ms for two) and counting goes on in memory",
    )
    live = cache_state()
    if not live.get("redis_configured"):
        yield ("warn", "no REDIS_URL: rate limits are counted in each process only")
    elif live.get("breaker") == "open" or live.get("forced_memory"):
        yield ("warn", f"the live cache is in memory now ({live.get('breaker')}, forced={live.get('forced_memory')})")
    else:
        yield ("ok", "the live cache is on Redis")


def guard_rails() -> dict[str, GuardRail]:
    checks: dict[str, GuardRail] = {
        f"Circuit breaker: {name}": (lambda name=name: check_breaker(name)) for name in settings.BULWARK_BREAKERS
    }
    checks["Guarded HTTP client (timeouts)"] = check_http_client
    checks.update(_registered)
    checks["Database: replica and primary fallback"] = check_database
    checks["Fallback cache (Redis -> memory)"] = check_cache
    return checks
