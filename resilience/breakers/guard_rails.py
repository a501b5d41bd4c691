"""Guard rails of the circuit breakers and the guarded HTTP client (registered in ResilienceConfig.ready)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import closing, suppress

from django.conf import settings

from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError, Forced, State
from resilience.breakers.exceptions import ExternalClientError, ExternalServerError, ExternalServiceUnavailable
from resilience.breakers.http import GuardedHttpClient
from resilience.breakers.registry import breaker_config, breaker_get
from resilience.guard_rails import FakeClock, Line, guard_rail_register


def register() -> None:
    for name in settings.BULWARK_BREAKERS:
        guard_rail_register(f"Circuit breaker: {name}", lambda name=name: check_breaker(name))
    guard_rail_register("Guarded HTTP client (timeouts)", check_http_client)


def _synthetic_failure() -> None:
    raise ExternalServerError("guard-rail", 500, "synthetic failure")


def _declined() -> None:
    raise ExternalClientError("guard-rail", 402, "synthetic decline")


def _ok() -> str:
    return "ok"


def _refuses_at_once(breaker: CircuitBreaker) -> bool:
    """Refused without calling the dependency at all (so without waiting on it)."""
    called = []
    try:
        breaker.call(lambda: called.append(1))
    except CircuitOpenError:
        return not called
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
