"""This process's breakers, by name, configured in ``settings.BULWARK_BREAKERS`` (from the environment).

Each breaker shares its failures, its open state and its half-open trial with every worker through the shared
cache (:mod:`resilience.breakers.shared`): an outage costs the fleet about ``failure_threshold`` failed calls,
not that many per worker. With Redis down each worker counts on its own again. The operator's forced modes
are shared through the database (:mod:`resilience.breakers.controls`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from resilience.breakers.breaker import BreakerConfig, CircuitBreaker, Exclusion
from resilience.breakers.controls import forced_mode
from resilience.breakers.exceptions import ExternalClientError
from resilience.breakers.listeners import EventListener, LoggingListener, MetricsListener
from resilience.breakers.shared import SharedBreakerState

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
                config = breaker_config(name)
                breaker = CircuitBreaker(
                    name,
                    config,
                    exclude=(ExternalClientError, *exclude),
                    listeners=[LoggingListener(), MetricsListener(name), EventListener()],
                    forced_source=lambda: forced_mode(name),
                    shared=SharedBreakerState(name, reset_timeout=config.reset_timeout),
                )
                _breakers[name] = breaker
    return breaker


def breakers_snapshot() -> dict[str, dict[str, Any]]:
    """Every configured breaker's state in this process, as operators see it (``test_guard_rails``)."""
    names = sorted({*settings.BULWARK_BREAKERS, *_breakers})
    return {name: breaker_get(name).snapshot() for name in names}


def reset_breakers() -> None:
    """Forget every breaker's state, this process's and the fleet's (tests)."""
    with _lock:
        names = {*settings.BULWARK_BREAKERS, *_breakers}
        _breakers.clear()
    for name in names:
        SharedBreakerState(name, reset_timeout=breaker_config(name).reset_timeout).publish_closed()
