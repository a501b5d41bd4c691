"""Breakers shared by the fleet through the test stack's Redis: two CircuitBreaker objects with one name play two
workers. Failures count fleet-wide, an open breaker reaches the other worker on its next call, one half-open
trial at a time for the fleet; with Redis down each worker is on its own again."""

from __future__ import annotations

import time
import uuid
from contextlib import suppress

import pytest

from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError, State
from resilience.breakers.shared import SharedBreakerState
from resilience.guard_rails import FakeClock
from tests.redis_servers import dead_redis_cache

THRESHOLD, RESET = 3, 10.0


pytestmark = pytest.mark.usefixtures("fresh_circuits")


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("gateway hung")


def ok() -> str:
    return "ok"


@pytest.fixture
def name() -> str:
    return f"shared-{uuid.uuid4().hex[:8]}"


def worker(name: str, clock: FakeClock, cache_alias: str = "default") -> CircuitBreaker:
    """One worker's breaker: its own lock, state and clock; the fleet's keys in the shared cache."""
    return CircuitBreaker(
        name,
        BreakerConfig(failure_threshold=THRESHOLD, reset_timeout=RESET),
        clock=clock,
        wall_clock=clock,  # the fleet's clock too: every worker's FakeClock is the same object here
        shared=SharedBreakerState(name, reset_timeout=RESET, cache_alias=cache_alias),
        sync_interval=0.0,  # re-read the fleet on every call (production: at most once a second)
    )


def failed(breaker: CircuitBreaker) -> None:
    with suppress(Boom):
        breaker.call(fail)


def refused_without_calling(breaker: CircuitBreaker) -> bool:
    called = []
    try:
        breaker.call(lambda: called.append(1))
    except CircuitOpenError:
        return not called
    return False


def test_failures_on_different_workers_add_up_and_every_worker_then_skips(name):
    clock = FakeClock()
    a, b, c = worker(name, clock), worker(name, clock), worker(name, clock)
    failed(a)
    failed(b)
    assert a.state is State.CLOSED and b.state is State.CLOSED
    failed(c)  # the fleet's third consecutive failure
    assert c.state is State.OPEN
    assert refused_without_calling(a) and refused_without_calling(b) and refused_without_calling(c)
    assert a.snapshot()["shared"] is True


def test_a_success_anywhere_resets_the_fleet_count(name):
    clock = FakeClock()
    a, b = worker(name, clock), worker(name, clock)
    failed(a)
    failed(a)
    assert b.call(ok) == "ok"
    failed(a)
    failed(b)
    assert a.state is State.CLOSED and b.state is State.CLOSED  # 2 in a row since the success, not 4
    failed(a)
    assert a.state is State.OPEN


def test_one_half_open_trial_for_the_fleet_then_everyone_follows_its_verdict(name):
    clock = FakeClock()
    a, b = worker(name, clock), worker(name, clock)
    for _ in range(THRESHOLD):
        failed(a)
    assert refused_without_calling(b)
    clock.advance(RESET)
    with a.guard():  # a's trial is in flight ...
        assert refused_without_calling(b)  # ... so b sends none
    assert a.state is State.CLOSED  # the trial succeeded
    assert b.call(ok) == "ok" and b.state is State.CLOSED  # b follows at once


def test_a_failed_trial_reopens_the_breaker_for_every_worker(name):
    clock = FakeClock()
    a, b = worker(name, clock), worker(name, clock)
    for _ in range(THRESHOLD):
        failed(b)
    clock.advance(RESET)
    failed(a)  # the fleet's trial, and it failed
    assert a.state is State.OPEN
    assert refused_without_calling(b)  # b's own timer had run out, but the fleet re-opened: no second trial
    clock.advance(RESET / 2)
    assert refused_without_calling(b)
    clock.advance(RESET / 2)
    assert b.call(ok) == "ok"  # the next trial, after a full reset timeout from the failed one
    assert a.call(ok) == "ok" and a.state is State.CLOSED


def test_a_trial_whose_worker_died_stops_blocking_after_the_reset_timeout(name):
    clock = FakeClock()
    a, b = worker(name, clock), worker(name, clock)
    for _ in range(THRESHOLD):
        failed(a)
    clock.advance(RESET)
    shared = SharedBreakerState(name, reset_timeout=1)
    assert shared.try_trial() is True  # a worker took the lease and died (the lease expires after 1 s here)
    assert refused_without_calling(b)
    time.sleep(1.5)  # the lease's expiry is real time in Redis
    assert b.call(ok) == "ok"


def test_with_redis_down_each_worker_counts_and_opens_on_its_own(name, settings):
    """Two workers = two fallback caches (each with its own process memory) at a Redis that is down."""
    settings.CACHES = {**settings.CACHES, "worker_a": dead_redis_cache(), "worker_b": dead_redis_cache()}
    clock = FakeClock()
    a, b = worker(name, clock, "worker_a"), worker(name, clock, "worker_b")
    failed(a)
    failed(b)
    failed(a)
    assert a.state is State.CLOSED and b.state is State.CLOSED  # 2 + 1: nobody reached 3 on its own
    failed(a)
    assert a.state is State.OPEN and a.snapshot()["shared"] is False
    assert refused_without_calling(a)
    assert b.call(ok) == "ok"  # b never heard of it: per-worker, as without sharing
    for _ in range(THRESHOLD):
        failed(b)
    assert refused_without_calling(b)


def test_an_operator_retry_in_a_fresh_process_sends_the_trial_at_once(name):
    clock = FakeClock()
    a = worker(name, clock)
    for _ in range(THRESHOLD):
        failed(a)
    command = worker(name, clock)  # manage.py retry_payments: a new process, its breaker closed
    command.trial_now()
    assert command.state is State.HALF_OPEN  # knew the fleet's breaker was open, and may try now
    assert command.call(ok) == "ok"  # the trial, long before the reset timeout
    assert command.state is State.CLOSED
    assert a.call(ok) == "ok" and a.state is State.CLOSED  # the fleet follows


def test_an_operator_retry_that_fails_keeps_the_breaker_open_for_the_fleet(name):
    clock = FakeClock()
    a = worker(name, clock)
    for _ in range(THRESHOLD):
        failed(a)
    command = worker(name, clock)
    command.trial_now()
    failed(command)
    assert refused_without_calling(command)  # one trial, then skipped again
    assert refused_without_calling(a)
