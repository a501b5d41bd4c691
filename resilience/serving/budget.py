"""A request's time budget (``SERVING_BUDGET_<CLASS>``), enforced where a request waits.

:class:`~resilience.serving.wsgi.ServingMiddleware` starts the budget when the request enters the worker. The
places that wait ask :func:`budget_remaining`:

- every database statement runs under ``min(its node deadline, the budget left)``; at the budget the statement
  is cancelled by PostgreSQL (a cancel request, so the node stays healthy and the connection usable) and the
  request answers ``504 request_timeout`` (``resilience/db/backend/base.py``); a statement that starts with the
  budget spent is not sent;
- every outgoing HTTP call's connect and read timeouts are cut to the budget left, and a call is not made once
  it is spent (``resilience/breakers/http.py``); such a cut says nothing about the service, so its breaker does
  not count it;
- the wait of a retried checkout for the first one is cut to it (``resilience/idempotency/services.py``).

The budget is cut once: after :func:`budget_cut` the rest of the request (rolling back, rendering the error,
releasing an idempotency key) runs under the ordinary deadlines only. Python code that spins without waiting
is not preempted (no thread can be, safely); gunicorn's worker timeout stays the last resort. Outside a request
(commands, the monitor thread) there is no budget. No dependency.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass

from resilience.serving.bulkheads import worker_bulkheads
from resilience.serving.exceptions import RequestTimeoutError


@dataclass
class Budget:
    seconds: float
    deadline: float  # time.monotonic()
    traffic_class: str
    cut: bool = False  # the budget has been cut once (504 on its way): no more deadlines from it

    def remaining(self) -> float | None:
        if self.cut:
            return None
        return self.deadline - time.monotonic()


_current: ContextVar[Budget | None] = ContextVar("bulwark_request_budget", default=None)


def budget_start(seconds: float, traffic_class: str) -> Token[Budget | None]:
    return _current.set(Budget(seconds, time.monotonic() + seconds, traffic_class))


def budget_end(token: Token[Budget | None]) -> bool:
    """End the budget ``budget_start`` returned ``token`` for; whether it was cut."""
    budget = _current.get()
    _current.reset(token)
    return budget is not None and budget.cut


def current_budget() -> Budget | None:
    return _current.get()


def budget_remaining() -> float | None:
    """Seconds left of this request's budget (negative once spent); None outside a request or once cut."""
    budget = _current.get()
    return None if budget is None else budget.remaining()


def budget_cut(error_class: type[RequestTimeoutError] = RequestTimeoutError) -> RequestTimeoutError:
    """Mark the budget as cut (once) and return the error to raise; counted for the class's bulkhead stats."""
    budget = _current.get()
    if budget is not None and not budget.cut:
        budget.cut = True
        worker_bulkheads().timed_out(budget.traffic_class)
    return error_class.for_budget(budget)
