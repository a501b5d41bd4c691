"""Database errors shown to clients, and the one raised instead of connecting to a node known to be down."""

from __future__ import annotations

import psycopg
from django.db import DatabaseError

from core.exceptions import AppError, DependencyUnavailableError
from resilience.observability.metrics import read_only_rejected
from resilience.serving.exceptions import RequestTimeoutError

RETRY_AFTER_SECONDS = 5
MAINTENANCE_MESSAGE = "The shop is in maintenance (read-only) mode; reading works, writing does not."


class ReadOnlyModeError(AppError, DatabaseError):
    """Writes are refused: the primary is down or an operator switched read-only mode on.

    It is a DatabaseError too, so best-effort bookkeeping that catches DatabaseError also catches it.
    """

    code = "read_only_mode"
    message = "The shop is in read-only mode for a moment; reading works, writing does not. Retry shortly."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        read_only_rejected()  # bulwark_read_only_rejections_total: one per refusal made


class OutcomeUnknownError(AppError, DatabaseError):
    """A write was cut off after it reached the primary (a statement in autocommit, or the COMMIT itself): it may
    have committed, so saying "nothing was written" (read_only_mode) would be a lie."""

    code = "outcome_unknown"
    message = (
        "The database stopped answering while this write was being committed: it may or may not have been "
        "saved. Read it again before retrying (a checkout retried with the same Idempotency-Key answers what "
        "happened)."
    )

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class StatementBudgetError(RequestTimeoutError, DatabaseError):
    """A statement was cancelled (or not sent) because the request's time budget ran out: 504 request_timeout.

    A DatabaseError too, so best-effort bookkeeping that catches DatabaseError also catches it, and the database
    middleware renders it for a non-DRF view (the admin), as it renders ReadOnlyModeError."""


class DatabaseUnavailableError(DependencyUnavailableError):
    """No database node could answer a read."""

    message = "The database is unavailable; try again shortly."

    def __init__(self) -> None:
        super().__init__(retry_after=RETRY_AFTER_SECONDS)


class NodeDownError(psycopg.OperationalError):
    """Raised instead of a connection attempt to a node whose breaker is open (Django wraps it)."""
