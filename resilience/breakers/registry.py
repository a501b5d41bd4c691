"""This process's breakers, by name, configured in ``settings.BULWARK_BREAKERS`` (from the environment).

Breaker state is per process (each gunicorn worker learns on its own that a dependency is down, at the
cost of at most ``failure_threshold`` failed calls); the operator's forced modes are shared through the
database (:mod:`resilience.breakers.controls`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, Exclusion
from resilience.breakers.controls import forced_mode
from resilience.breakers.exceptions import ExternalClientError
from resilience.breakers.listeners import LoggingListener, MetricsListener

_lock = threading.Lock()
_breakers: dict[str, CircuitBreaker] = {}


def breaker_config(name: str) -> BreakerConfig:
    """The configuration of a breaker named in ``settings.BULWARK_BREAKERS`` (defaults for others)."""
    return BreakerConfig(**settings.BULWARK_BREAKERS.get(name, {}))


def breaker_get(name: str, *, exclude: Sequence[Exclusion] = ()) -> CircuitBreaker:
    """The process-wide breaker called ``name``, created on first use (``exclude`` counts only then).

    A 4xx answer (:class:`ExternalClientError`) never counts as a failure.
    """
    breaker = _breakers.get(name)
    if breaker is None:
        with _lock:
            breaker = _breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(
                    name,
                    breaker_config(name),
                    exclude=(ExternalClientError, *exclude),
                    listeners=[LoggingListener(), MetricsListener(name)],
                    forced_source=lambda: forced_mode(name),
                )
                _breakers[name] = breaker
    return breaker


def breakers_snapshot() -> dict[str, dict[str, Any]]:
    """Every configured breaker's state in this process, as operators see it (``test_guard_rails``)."""
    names = sorted({*settings.BULWARK_BREAKERS, *_breakers})
    return {name: breaker_get(name).snapshot() for name in names}


def reset_breakers() -> None:
    """Forget every breaker's state (tests)."""
    with _lock:
        _breakers.clear()
