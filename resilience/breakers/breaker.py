"""One circuit breaker: closed -> open after N consecutive failures -> half-open trial(s) -> closed or open again.

Our own small breaker, not pybreaker: pybreaker's ``call()`` holds one ``RLock`` for the whole guarded call,
so under gunicorn's gthread workers every thread calling a slow gateway would queue behind the one in
flight (a hanging dependency then costs ``threads x timeout``, not one timeout). Here the lock guards only
the bookkeeping: taking a permit before the call and recording its outcome after it, never the call itself.

Semantics:

- **closed**: every call goes through; ``failure_threshold`` consecutive failures open the breaker (a success
  resets the count). Exceptions matching ``exclude`` (a "card declined", any 4xx) count as successes: the
  dependency answered.
- **open**: calls are refused at once with :class:`CircuitOpenError` (no network, no timeout) for
  ``reset_timeout`` seconds.
- **half-open**: up to ``half_open_max_calls`` trial calls go through, the rest are refused at once;
  ``success_threshold`` trial successes close the breaker, one trial failure opens it again. A trial that
  never reports back (its thread died) stops blocking new trials after ``reset_timeout``.
- **forced** by an operator (``forced_source``): ``open`` refuses every call, ``closed`` lets every call
  through and freezes the state machine; back to ``automatic``, a breaker that was forced open starts with a
  trial (half-open), one that was forced closed starts closed with a clean count.

- **shared** (``shared``, see :mod:`resilience.breakers.shared`): failures are counted fleet-wide, an open
  breaker is published to every worker (each re-reads it at most every ``sync_interval`` seconds, on its
  next call), and the half-open trial is one for the whole fleet. Without it (or with the shared store down,
  answered from this process's memory), the breaker is this process's alone.

Outcomes of calls that started before a transition (a slow call admitted while closed that fails after the
breaker opened) are counted in the metrics but do not move the state machine again.

Listeners hear every state change and every call outcome, outside the lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from resilience.breakers.exceptions import CallCutShort

T = TypeVar("T")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Forced(StrEnum):
    AUTOMATIC = "automatic"
    OPEN = "open"
    CLOSED = "closed"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    EXCLUDED = "excluded"  # an exception that does not count (the dependency answered)
    REJECTED = "rejected"  # refused by the open breaker: the dependency was not called


class CircuitOpenError(Exception):
    """The breaker refused the call: the dependency was not called at all."""

    def __init__(self, name: str, *, retry_after: float, forced: bool = False) -> None:
        self.name = name
        self.retry_after = retry_after
        self.forced = forced
        why = "forced open by an operator" if forced else f"open, next trial in {retry_after:.1f}s"
        super().__init__(f"circuit breaker {name!r} is {why}")


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_max_calls < 1 or self.success_threshold < 1:
            raise ValueError("failure_threshold, half_open_max_calls and success_threshold must be at least 1")
        if self.success_threshold > self.half_open_max_calls:
            raise ValueError("success_threshold cannot exceed half_open_max_calls")
        if self.reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")


class SharedState(Protocol):
    """The fleet's view of a breaker (:class:`resilience.breakers.shared.SharedBreakerState`)."""

    def fleet_wide(self) -> bool: ...

    def record_failure(self) -> int: ...

    def record_success(self) -> None: ...

    def opened_at(self) -> float | None: ...

    def publish_open(self, at: float) -> None: ...

    def publish_closed(self) -> None: ...

    def try_trial(self) -> bool: ...

    def end_trial(self) -> None: ...


class BreakerListener(Protocol):
    def state_changed(self, breaker: CircuitBreaker, old: str, new: str, reason: str) -> None: ...

    def call_recorded(self, breaker: CircuitBreaker, outcome: Outcome) -> None: ...


Exclusion = type[BaseException] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class _Permit:
    generation: int
    trial: bool
    forced: bool


@dataclass(frozen=True)
class _Change:
    old: str
    new: str
    reason: str


class CircuitBreaker:
    """A thread-safe breaker; use ``breaker.call(fn, ...)`` or ``with breaker.guard(): ...``."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        exclude: Sequence[Exclusion] = (),
        listeners: Sequence[BreakerListener] = (),
        forced_source: Callable[[], Forced] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
        sync_interval: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.exclude = tuple(exclude)
        self.listeners = list(listeners)
        self._forced_source = forced_source or (lambda: Forced.AUTOMATIC)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._forced = Forced.AUTOMATIC
        self._generation = 0
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._trial_successes = 0
        self._last_trial_at = 0.0
        self._changed_at = time.time()
        self._last_failure = ""
        self._counts = {outcome: 0 for outcome in Outcome}
        self.shared = shared
        self.sync_interval = sync_interval
        self._wall = wall_clock  # the fleet's clock: workers compare the time the breaker opened
        self._synced_at = -math.inf  # when this process last read the fleet's state (clock time)
        self._published_open: float | None = None  # wall time of the fleet's open this process follows

    # ---- the guarded call ------------------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.guard():
            return fn(*args, **kwargs)

    @contextmanager
    def guard(self) -> Iterator[None]:
        permit = self._acquire()
        try:
            yield
        except CallCutShort:  # the caller ran out of time: says nothing about the dependency
            self._release(permit)
            raise
        except Exception as exc:
            self._record(permit, Outcome.EXCLUDED if self._is_excluded(exc) else Outcome.FAILURE, exc)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: says nothing about the dependency
            self._release(permit)
            raise
        else:
            self._record(permit, Outcome.SUCCESS)

    # ---- introspection -------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The state a call would meet now (forced states included)."""
        with self._lock:
            changes = self._sync(self._clock())
            state = self._effective()
        self._emit(changes)
        return state

    @property
    def forced(self) -> Forced:
        with self._lock:
            changes = self._sync(self._clock())
            forced = self._forced
        self._emit(changes)
        return forced

    @property
    def forced_mode(self) -> Forced:
        """The operator's mode as last applied (no refresh; safe inside a listener)."""
        return self._forced

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            changes = self._sync(now)
            snap = {
                "name": self.name,
                "state": self._effective().value,
                "forced": self._forced.value,
                "consecutive_failures": self._failures,
                "failure_threshold": self.config.failure_threshold,
                "reset_timeout": self.config.reset_timeout,
                "half_open_max_calls": self.config.half_open_max_calls,
                "retry_in": round(max(0.0, self._opened_at + self.config.reset_timeout - now), 3)
                if self._state is State.OPEN
                else None,
                "changed_at": self._changed_at,
                "last_failure": self._last_failure,
                "calls": {outcome.value: count for outcome, count in self._counts.items()},
                "shared": self.shared is not None and self.shared.fleet_wide(),
            }
        self._emit(changes)
        return snap

    def trial_now(self) -> None:
        """An operator retries now (``retry_payments``): an open breaker lets its next call through as the
        (fleet's one) trial at once, instead of after the reset timeout. Closed or forced: nothing changes."""
        if self.shared is not None:
            self._sync_shared(force=True)  # a fresh process learns that the fleet's breaker is open
        with self._lock:
            if self._forced is Forced.AUTOMATIC and self._state is State.OPEN:
                self._opened_at = self._clock() - self.config.reset_timeout

    # ---- internals (the lock is held only here, never around the guarded call) -----------------------------

    def _effective(self) -> State:
        if self._forced is Forced.OPEN:
            return State.OPEN
        if self._forced is Forced.CLOSED:
            return State.CLOSED
        return self._state

    def _transition(self, new: State, reason: str, changes: list[_Change], now: float) -> None:
        old = self._effective()
        self._state = new
        self._generation += 1
        self._trials_in_flight = 0
        self._trial_successes = 0
        if new is State.OPEN:
            self._opened_at = now
        if new is State.CLOSED:
            self._failures = 0
        self._changed_at = time.time()
        if old is not new:
            changes.append(_Change(old.value, new.value, reason))

    def _sync(self, now: float) -> list[_Change]:
        """Apply an operator's forced mode and the open -> half-open timer; returns the changes to announce."""
        changes: list[_Change] = []
        forced = self._forced_source()
        if forced is not self._forced:
            old_effective, previous = self._effective(), self._forced
            self._forced = forced
            self._generation += 1  # outcomes of calls admitted under the old mode no longer steer
            self._trials_in_flight = 0
            self._trial_successes = 0
            if forced is Forced.AUTOMATIC:
                if previous is Forced.OPEN:  # the dependency may be back: find out with a trial
                    self._state, self._opened_at = State.OPEN, now - self.config.reset_timeout
                else:
                    self._state, self._failures = State.CLOSED, 0
            self._changed_at = time.time()
            new_effective = State.HALF_OPEN if self._open_expired(now) else self._effective()
            changes.append(
                _Change(old_effective.value, new_effective.value, f"operator: {previous.value} -> {forced.value}")
            )
        if self._forced is Forced.AUTOMATIC and self._open_expired(now):
            self._state = State.HALF_OPEN
            self._generation += 1
            self._trials_in_flight = 0
            self._trial_successes = 0
            self._changed_at = time.time()
            if not (changes and changes[-1].new == State.HALF_OPEN.value):
                changes.append(_Change(State.OPEN.value, State.HALF_OPEN.value, "reset timeout elapsed"))
        return changes

    def _open_expired(self, now: float) -> bool:
        return self._state is State.OPEN and now - self._opened_at >= self.config.reset_timeout

    def _acquire(self) -> _Permit:
        if self.shared is not None:
            self._sync_shared()
        rejected: CircuitOpenError | None = None
        with self._lock:
            now = self._clock()
            changes = self._sync(now)
            permit: _Permit | None = None
            if self._forced is Forced.OPEN:
                rejected = CircuitOpenError(self.name, retry_after=self.config.reset_timeout, forced=True)
            elif self._forced is Forced.CLOSED:
                permit = _Permit(self._generation, trial=False, forced=True)
            elif self._state is State.OPEN:
                rejected = CircuitOpenError(self.name, retry_after=self._opened_at + self.config.reset_timeout - now)
            elif self._state is State.HALF_OPEN:
                stuck = now - self._last_trial_at >= self.config.reset_timeout
                if self._trials_in_flight < self.config.half_open_max_calls or stuck:
                    if stuck:
                        self._trials_in_flight = 0
                    self._trials_in_flight += 1
                    self._last_trial_at = now
                    permit = _Permit(self._generation, trial=True, forced=False)
                else:
                    rejected = CircuitOpenError(self.name, retry_after=self.config.reset_timeout)
            else:
                permit = _Permit(self._generation, trial=False, forced=False)
        self._emit(changes)
        if permit is not None and permit.trial and self.shared is not None and not self.shared.try_trial():
            # Another worker's trial is in flight: the fleet sends one at a time; this one waits for its verdict.
            self._release(permit, lease=False)
            permit, rejected = None, CircuitOpenError(self.name, retry_after=self.sync_interval)
        if rejected is not None:
            with self._lock:
                self._counts[Outcome.REJECTED] += 1
            self._notify_call(Outcome.REJECTED)
            raise rejected
        assert permit is not None
        return permit

    def _release(self, permit: _Permit, *, lease: bool = True) -> None:
        with self._lock:
            if permit.trial and permit.generation == self._generation:
                self._trials_in_flight = max(0, self._trials_in_flight - 1)
        if permit.trial and lease and self.shared is not None:
            self.shared.end_trial()

    def _record(self, permit: _Permit, outcome: Outcome, exc: BaseException | None = None) -> None:
        changes: list[_Change] = []
        shared_step: str | None = None  # what the fleet must hear, said outside the lock
        with self._lock:
            now = self._clock()
            self._counts[outcome] += 1
            if outcome is Outcome.FAILURE and exc is not None:
                self._last_failure = f"{type(exc).__name__}: {exc}"[:300]
            current = permit.generation == self._generation and not permit.forced
            if current and permit.trial:
                self._trials_in_flight = max(0, self._trials_in_flight - 1)
                if outcome is Outcome.FAILURE:
                    self._transition(State.OPEN, f"trial call failed: {self._last_failure}", changes, now)
                    shared_step = "open"
                else:
                    self._trial_successes += 1
                    if self._trial_successes >= self.config.success_threshold:
                        self._transition(State.CLOSED, "trial call succeeded", changes, now)
                        shared_step = "closed"
                    else:
                        shared_step = "end_trial"  # the next trial may take the lease
            elif current and self._state is State.CLOSED:
                if outcome is Outcome.FAILURE:
                    self._failures += 1
                    if self.shared is not None:
                        shared_step = "failure"  # the fleet's count decides
                    elif self._failures >= self.config.failure_threshold:
                        reason = f"{self._failures} consecutive failures, last: {self._last_failure}"
                        self._transition(State.OPEN, reason, changes, now)
                else:
                    self._failures = 0
                    shared_step = "success" if self.shared is not None else None
            elif permit.trial and self.shared is not None:
                shared_step = "end_trial"  # a stale trial: give the lease back
        if self.shared is not None and shared_step is not None:
            changes += self._tell_fleet(shared_step, permit)
        self._emit(changes)
        self._notify_call(outcome)

    # ---- the fleet (``shared``): every call to it is made outside the lock ---------------------------------

    def _tell_fleet(self, step: str, permit: _Permit) -> list[_Change]:
        shared = self.shared
        assert shared is not None
        changes: list[_Change] = []
        if step == "failure":
            fleet_failures = shared.record_failure()
            with self._lock:
                if permit.generation == self._generation and self._state is State.CLOSED:
                    # Fleet-wide: the fleet's count. In memory (Redis down): this process's, as without sharing.
                    self._failures = fleet_failures if shared.fleet_wide() else max(self._failures, fleet_failures)
                    if self._failures >= self.config.failure_threshold:
                        where = "across the fleet" if shared.fleet_wide() else "in this process"
                        reason = f"{self._failures} consecutive failures {where}, last: {self._last_failure}"
                        self._transition(State.OPEN, reason, changes, self._clock())
                        step = "open"
        if step == "open":
            opened = self._wall()
            shared.publish_open(opened)
            with self._lock:
                self._published_open = opened
        elif step == "closed":
            shared.publish_closed()
            with self._lock:
                self._published_open = None
        elif step == "success":
            shared.record_success()
        elif step == "end_trial":
            shared.end_trial()
        return changes

    def _sync_shared(self, *, force: bool = False) -> None:
        """Follow the fleet (at most every ``sync_interval``): open when another worker opened the breaker,
        closed when another worker's trial closed it."""
        shared = self.shared
        assert shared is not None
        now = self._clock()
        if now - self._synced_at < self.sync_interval and not force:
            return
        self._synced_at = now
        opened_wall = shared.opened_at()
        changes: list[_Change] = []
        with self._lock:
            now = self._clock()
            if self._forced is not Forced.AUTOMATIC:
                return
            if opened_wall is None:
                if self._published_open is not None and self._state is not State.CLOSED:
                    self._transition(State.CLOSED, "closed by another worker's trial", changes, now)
                self._published_open = None
            elif opened_wall != self._published_open:  # a new open for the fleet (one this process does not follow)
                opened_here = now - max(0.0, self._wall() - opened_wall)
                if self._state is State.OPEN:
                    self._opened_at = max(self._opened_at, opened_here)  # re-opened elsewhere (a failed trial)
                else:
                    self._transition(State.OPEN, "opened by another worker", changes, now)
                    self._opened_at = opened_here
                self._published_open = opened_wall
        self._emit(changes)

    def _is_excluded(self, exc: BaseException) -> bool:
        for rule in self.exclude:
            if isinstance(rule, type):
                if isinstance(exc, rule):
                    return True
            elif rule(exc):
                return True
        return False

    def _emit(self, changes: list[_Change]) -> None:
        for change in changes:
            for listener in self.listeners:
                listener.state_changed(self, change.old, change.new, change.reason)

    def _notify_call(self, outcome: Outcome) -> None:
        for listener in self.listeners:
            listener.call_recorded(self, outcome)
