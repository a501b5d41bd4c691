"""The guard-rail registry behind ``manage.py test_guard_rails``: each breaker and fallback, exercised safely.

A guard rail is a function yielding ``(level, message)`` lines, level one of ``ok``, ``fail``, ``warn``,
``info``. Each area registers its own from ``AppConfig.ready()`` with :func:`guard_rail_register`, beside the
code it checks: ``resilience/breakers/guard_rails.py`` (each breaker, the guarded HTTP client),
``resilience/db/guard_rails.py``, ``resilience/cache/guard_rails.py``, ``shop/payments/guard_rails.py``.

Guard rails never touch production state: breakers are tripped as scratch copies with the live configuration
(and a simulated clock instead of waiting out the reset timeout), clients are pointed at sockets of our own on
loopback, the database fallback is checked on a scratch node registry plus one read-only probe of every node.
A dependency that is down right now is a ``warn`` (the guard rail handles it), not a ``fail``; ``fail`` means
a guard rail itself does not work. "At once" is shown by what was not called, never by a stopwatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

Line = tuple[str, str]
GuardRail = Callable[[], Iterable[Line]]

_registered: dict[str, GuardRail] = {}


def guard_rail_register(title: str, check: GuardRail) -> None:
    """Add a guard rail (shown under ``title``, in registration order)."""
    _registered[title] = check


def guard_rail_unregister(title: str) -> None:
    _registered.pop(title, None)


def guard_rails() -> dict[str, GuardRail]:
    return dict(_registered)


class FakeClock:
    """A monotonic clock a guard rail advances by hand (a breaker's reset timeout without the wait)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger while a scratch copy fails on purpose (its lines would read like a real outage)."""
    target = logging.getLogger(logger_name)
    was = target.disabled
    target.disabled = True
    try:
        yield
    finally:
        target.disabled = was
