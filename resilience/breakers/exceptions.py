"""Errors of calls to external services, as the guarded HTTP client raises them.

``ExternalServiceUnavailable`` (and its subclasses) means the service could not be reached, did not answer
in time, answered 5xx/garbage, or was skipped by an open breaker: what the call did is unknown, so retry it
later with the same idempotency key. These count against the breaker (an open breaker's refusal is
:class:`~resilience.breakers.breaker.CircuitOpenError`, re-raised as ``ExternalCircuitOpen``).
``ExternalClientError`` is a 4xx answer: the service is up and refused this request; it never counts.
"""

from __future__ import annotations


class ExternalServiceError(Exception):
    def __init__(self, service: str, message: str) -> None:
        self.service = service
        super().__init__(f"{service}: {message}")


class ExternalServiceUnavailable(ExternalServiceError):
    """Unreachable, slow, erroring or skipped: the outcome is unknown; retry later."""


class ExternalCircuitOpen(ExternalServiceUnavailable):
    """The breaker is open (or forced open): the service was not called at all."""

    def __init__(self, service: str, message: str, *, retry_after: float, forced: bool) -> None:
        super().__init__(service, message)
        self.retry_after = retry_after
        self.forced = forced


class ExternalTimeout(ExternalServiceUnavailable):
    pass


class CallCutShort(Exception):
    """The caller's time budget cut the call short, or it was not made: says nothing about the service (a breaker
    counts it neither way)."""


class ExternalBudgetSpent(ExternalTimeout, CallCutShort):
    """The request's time budget ran out before the service answered (or before the call was made)."""


class ExternalConnectionError(ExternalServiceUnavailable):
    pass


class ExternalServerError(ExternalServiceUnavailable):
    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(service, message)
        self.status = status


class ExternalBadResponse(ExternalServiceUnavailable):
    pass


class ExternalClientError(ExternalServiceError):
    """A 4xx answer (other than 408/429): the service works; this request was refused. Never opens a breaker."""

    def __init__(self, service: str, status: int, message: str, body: object = None) -> None:
        super().__init__(service, message)
        self.status = status
        self.body = body
