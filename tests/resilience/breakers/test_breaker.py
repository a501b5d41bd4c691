"""Breaker transitions, exclusions, forced modes and concurrency: the state machine with a simulated clock,
the concurrency with real threads and a real slow function."""

from __future__ import annotations

import threading
import time

import pytest

from resilience.breakers.breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    Forced,
    Outcome,
    State,
)
from resilience.guard_rails import FakeClock


class Boom(Exception):
    pass


class Declined(Exception):
    pass


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.outcomes: list[Outcome] = []

    def state_changed(self, breaker, old, new, reason) -> None:
        self.changes.append((old, new, reason))

    def call_recorded(self, breaker, outcome) -> None:
        self.outcomes.append(outcome)


def fail() -> None:
    raise Boom("down")


def make(threshold: int = 3, reset: float = 10.0, **kwargs):
    clock = FakeClock()
    recorder = Recorder()
    mode = {"value": Forced.AUTOMATIC}
    breaker = CircuitBreaker(
        "test",
        BreakerConfig(failure_threshold=threshold, reset_timeout=reset, **kwargs),
        exclude=(Declined, lambda exc: isinstance(exc, ValueError) and "ignore" in str(exc)),
        listeners=[recorder],
        forced_source=lambda: mode["value"],
        clock=clock,
    )
    return breaker, clock, recorder, mode


def failures(breaker: CircuitBreaker, count: int) -> None:
    for _ in range(count):
        with pytest.raises((Boom, CircuitOpenError)):
            breaker.call(fail)


def test_closed_breaker_passes_calls_and_results():
    breaker, *_ = make()
    assert breaker.call(lambda x: x * 2, 21) == 42
    assert breaker.state is State.CLOSED


def test_opens_after_threshold_consecutive_failures_only():
    breaker, _, recorder, _ = make(threshold=3)
    failures(breaker, 2)
    breaker.call(lambda: None)  # a success resets the count
    failures(breaker, 2)
    assert breaker.state is State.CLOSED
    failures(breaker, 1)
    assert breaker.state is State.OPEN
    assert recorder.changes[-1][:2] == ("closed", "open")
    assert "3 consecutive failures" in recorder.changes[-1][2]


def test_open_breaker_rejects_fast_without_calling():
    breaker, _, recorder, _ = make(threshold=1)
    failures(breaker, 1)
    called = []
    with pytest.raises(CircuitOpenError) as excinfo:
        breaker.call(lambda: called.append(1))
    assert called == []
    assert 0 < excinfo.value.retry_after <= 10
    assert not excinfo.value.forced
    assert recorder.outcomes[-1] is Outcome.REJECTED


def test_half_open_after_reset_timeout_admits_one_trial_and_success_closes():
    breaker, clock, recorder, _ = make(threshold=1, reset=10)
    failures(breaker, 1)
    clock.advance(9.9)
    assert breaker.state is State.OPEN
    clock.advance(0.1)
    assert breaker.state is State.HALF_OPEN
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is State.CLOSED
    assert [change[:2] for change in recorder.changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_failed_trial_reopens_for_another_reset_timeout():
    breaker, clock, _, _ = make(threshold=1, reset=10)
    failures(breaker, 1)
    clock.advance(10)
    failures(breaker, 1)
    assert breaker.state is State.OPEN
    clock.advance(9)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    clock.advance(1)
    assert breaker.state is State.HALF_OPEN


def test_half_open_admits_only_max_trials_at_once_the_rest_rejected_fast():
    breaker, clock, _, _ = make(threshold=1, reset=10)
    failures(breaker, 1)
    clock.advance(10)
    inside, release = threading.Event(), threading.Event()
    results: list[str] = []

    def trial() -> None:
        inside.set()
        release.wait(5)
        results.append("trial")

    thread = threading.Thread(target=breaker.call, args=(trial,))
    thread.start()
    assert inside.wait(5)
    with pytest.raises(CircuitOpenError):  # a second caller during the trial is refused, not queued
        breaker.call(lambda: results.append("second"))
    release.set()
    thread.join(5)
    assert results == ["trial"]
    assert breaker.state is State.CLOSED


def test_success_threshold_needs_that_many_trial_successes():
    breaker, clock, _, _ = make(threshold=1, reset=10, half_open_max_calls=2, success_threshold=2)
    failures(breaker, 1)
    clock.advance(10)
    breaker.call(lambda: None)
    assert breaker.state is State.HALF_OPEN
    breaker.call(lambda: None)
    assert breaker.state is State.CLOSED


def test_stuck_trial_stops_blocking_after_reset_timeout():
    breaker, clock, _, _ = make(threshold=1, reset=10)
    failures(breaker, 1)
    clock.advance(10)
    permit = breaker._acquire()  # a trial whose thread never reports back
    assert permit.trial
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    clock.advance(10)
    breaker.call(lambda: None)
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("error", [Declined("card declined"), ValueError("ignore me")])
def test_excluded_exceptions_never_open_and_count_as_answers(error):
    breaker, _, recorder, _ = make(threshold=2)
    failures(breaker, 1)

    def raises() -> None:
        raise error

    for _ in range(5):
        with pytest.raises(type(error)):
            breaker.call(raises)
    failures(breaker, 1)  # the excluded answer reset the count: one failure is not two in a row
    assert breaker.state is State.CLOSED
    assert recorder.outcomes.count(Outcome.EXCLUDED) == 5


def test_excluded_exception_in_half_open_closes():
    breaker, clock, _, _ = make(threshold=1, reset=1)
    failures(breaker, 1)
    clock.advance(1)
    with pytest.raises(Declined):
        breaker.call(lambda: (_ for _ in ()).throw(Declined("declined")))
    assert breaker.state is State.CLOSED


def test_keyboard_interrupt_is_no_failure():
    breaker, _clock, _, _ = make(threshold=1, reset=1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state is State.CLOSED


def test_forced_open_refuses_everything_and_automatic_resumes_with_a_trial():
    breaker, _clock, recorder, mode = make(threshold=3)
    mode["value"] = Forced.OPEN
    called = []
    with pytest.raises(CircuitOpenError) as excinfo:
        breaker.call(lambda: called.append(1))
    assert excinfo.value.forced and called == []
    assert breaker.state is State.OPEN and breaker.forced is Forced.OPEN
    mode["value"] = Forced.AUTOMATIC
    assert breaker.state is State.HALF_OPEN  # back to automatic: a trial decides
    breaker.call(lambda: None)
    assert breaker.state is State.CLOSED
    assert "operator" in recorder.changes[0][2]


def test_forced_closed_always_calls_and_freezes_the_state_machine():
    breaker, _clock, _, mode = make(threshold=2)
    mode["value"] = Forced.CLOSED
    for _ in range(10):
        with pytest.raises(Boom):  # never CircuitOpenError
            breaker.call(fail)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["calls"]["failure"] == 10
    mode["value"] = Forced.AUTOMATIC
    failures(breaker, 1)
    assert breaker.state is State.CLOSED  # starts with a clean count
    failures(breaker, 1)
    assert breaker.state is State.OPEN


def test_forced_closed_on_an_open_breaker_lets_calls_through():
    breaker, _, _, mode = make(threshold=1)
    failures(breaker, 1)
    mode["value"] = Forced.CLOSED
    assert breaker.call(lambda: "through") == "through"
    mode["value"] = Forced.AUTOMATIC
    assert breaker.state is State.CLOSED


def test_stale_outcome_of_a_call_admitted_before_the_breaker_opened_does_not_steer():
    breaker, _clock, _, _ = make(threshold=1)
    slow = breaker._acquire()  # admitted while closed
    failures(breaker, 1)  # opens
    breaker._record(slow, Outcome.SUCCESS)  # the slow call succeeds late
    assert breaker.state is State.OPEN


def test_snapshot_shows_state_counts_and_retry_in():
    breaker, clock, _, _ = make(threshold=1, reset=10)
    failures(breaker, 1)
    clock.advance(4)
    snap = breaker.snapshot()
    assert snap["state"] == "open" and snap["forced"] == "automatic"
    assert snap["retry_in"] == pytest.approx(6)
    assert snap["calls"]["failure"] == 1
    assert "Boom" in snap["last_failure"]


@pytest.mark.parametrize(
    "kwargs", [{"failure_threshold": 0}, {"reset_timeout": 0}, {"half_open_max_calls": 1, "success_threshold": 2}]
)
def test_config_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)


@pytest.mark.timeout(60)
def test_many_threads_through_one_breaker_run_a_slow_call_concurrently():
    """pybreaker would serialize these (its lock is held for the whole call): every thread must be inside the
    slow function at the same time, which a Barrier inside the call proves (it times out if they queue)."""
    threads = 8
    breaker = CircuitBreaker("concurrent", BreakerConfig(failure_threshold=3, reset_timeout=30))
    inside = threading.Barrier(threads, timeout=10)
    peak, current, lock = [0], [0], threading.Lock()
    errors: list[BaseException] = []

    def slow() -> None:
        with lock:
            current[0] += 1
            peak[0] = max(peak[0], current[0])
        inside.wait()  # all threads must reach this point together
        time.sleep(0.2)
        with lock:
            current[0] -= 1

    def run() -> None:
        try:
            breaker.call(slow)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert errors == []
    assert peak[0] == threads
    assert breaker.snapshot()["calls"]["success"] == threads


@pytest.mark.timeout(60)
def test_concurrent_failures_open_once_and_later_calls_are_refused():
    threads = 10
    breaker = CircuitBreaker("concurrent-fail", BreakerConfig(failure_threshold=3, reset_timeout=30))
    recorder = Recorder()
    breaker.listeners.append(recorder)
    start = threading.Barrier(threads, timeout=10)

    def run() -> None:
        start.wait()
        try:
            breaker.call(fail)
        except (Boom, CircuitOpenError):
            pass

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert breaker.state is State.OPEN
    assert [change[:2] for change in recorder.changes] == [("closed", "open")]
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
