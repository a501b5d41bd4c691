"""Payment errors under one root. None reaches an API client: checkout keeps the order ``pending_payment``
and says so in the order's ``payment`` field (django-oscar's split: anticipated declines are answers, not
errors; these are the unexpected outcomes)."""

from __future__ import annotations


class PaymentError(Exception):
    """Root of every payment failure."""


class GatewayUnavailableError(PaymentError):
    """The gateway could not be reached, did not answer in time, or its breaker is open: retry later.

    ``skipped`` is true when the gateway was not called at all (open breaker): nothing can have been charged.
    """

    def __init__(self, message: str, *, skipped: bool = False) -> None:
        super().__init__(message)
        self.skipped = skipped


class GatewayRequestRefusedError(PaymentError):
    """The gateway answered but refused the request itself (a 4xx that is no decline): a bug to look at."""
