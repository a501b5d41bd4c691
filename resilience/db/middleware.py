"""Per-request database routing: sets up the routing state, re-runs a request that met a failed node,
answers writes with ``503 read_only_mode`` when the primary is down (``503 outcome_unknown`` when a write was cut
off after it was sent: it may have committed), and hands out read-your-writes tokens.

Re-running is safe for GET/HEAD/OPTIONS; a write request is re-run only when it wrote nothing yet (its failure
was a read, on a replica or on the primary), or when the primary alias led to a node that refused the write as
read-only (SQLSTATE 25006: nothing was written), after the connection is discarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse

from core.api.responses import error_response
from core.exceptions import AppError, RequestTooLargeError
from resilience.controls.state import db_controls
from resilience.db import consistency
from resilience.db.context import RoutingState, routing
from resilience.db.exceptions import (
    MAINTENANCE_MESSAGE,
    DatabaseUnavailableError,
    OutcomeUnknownError,
    ReadOnlyModeError,
)
from resilience.db.monitor import monitor_start
from resilience.db.nodes import PRIMARY, registry
from resilience.health.workers import publisher_start
from resilience.observability.metrics import request_rerun

logger = logging.getLogger("resilience.db")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STALE_HEADER = "X-Data-Stale"


class _RetryResponse(HttpResponse):
    """Marks a request to run once more (it never reaches the client)."""


class DatabaseRoutingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        monitor_start()
        publisher_start()  # this worker's snapshot for the admin dashboard (resilience/health/workers.py)
        safe = request.method in SAFE_METHODS
        if not safe:
            try:
                request.body  # noqa: B018 - read the body now so a retried request can parse it again
            except RequestDataTooBig:
                return error_response(request, RequestTooLargeError())
        state = RoutingState(safe_method=safe, min_lsn=self._client_lsn(request))
        request._db_routing = state  # type: ignore[attr-defined]
        with routing(state):
            response = self.get_response(request)
            if isinstance(response, _RetryResponse):
                logger.info(
                    "re-running %s %s after a database node failed",
                    request.method,
                    request.path,
                    extra={"event": "db_request_retried", "failed": sorted(state.failed)},
                )
                request_rerun()
                response = self.get_response(request)
                if isinstance(response, _RetryResponse):  # failed again: never loop
                    response = error_response(request, self._failure_error(state))
            if state.wrote:
                self._hand_out_token(request, response)
        if state.stale:
            response[STALE_HEADER] = "true"
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        state: RoutingState | None = getattr(request, "_db_routing", None)
        if state is None or not isinstance(exception, DatabaseError):
            return None
        if isinstance(exception, AppError):  # ReadOnlyModeError from a non-DRF view (the admin)
            return error_response(request, exception)
        if not state.failed:
            return None  # not a node failure: a bug, reported as one
        for alias in state.failed:
            connections[alias].close()
        # A write request may run again when it wrote nothing yet: its failed step was a read (on a replica, e.g.
        # the user lookup while authenticating, or on the primary just as it died), so running it again cannot
        # write twice. Every statement that changes something marks the request as having written
        # (the router for the ORM, the backend for raw SQL).
        nothing_written = not state.wrote and not state.outcome_unknown
        if not state.retried and (state.safe_method or state.read_only_refused or nothing_written):
            state.retried = True
            state.replica = None
            state.wrote = False
            state.read_only_refused = False
            state.outcome_unknown = False  # a safe request's bookkeeping write: the re-run decides the answer
            state.failed.discard(PRIMARY)  # the primary alias reconnects; the failed replicas stay avoided
            return _RetryResponse()
        return error_response(request, self._failure_error(state))

    @staticmethod
    def _failure_error(state: RoutingState) -> AppError:
        if state.outcome_unknown:
            return OutcomeUnknownError()  # cut off after it was sent: never claim nothing was written
        if not state.safe_method and not registry().may_connect(PRIMARY):  # down, or suspect (probe overdue)
            # A write that met the dead primary (in ``atomic`` before the router was asked): with the operator's
            # switch on, say maintenance, as the router does while the primary is up.
            return ReadOnlyModeError(MAINTENANCE_MESSAGE if db_controls().read_only else None)
        return DatabaseUnavailableError()

    @staticmethod
    def _client_lsn(request: HttpRequest) -> int | None:
        positions = [
            consistency.lsn_from_token(request.COOKIES.get(consistency.COOKIE)),
            consistency.lsn_from_token(request.headers.get(consistency.HEADER)),
        ]
        known = [lsn for lsn in positions if lsn is not None]
        return max(known) if known else None

    @staticmethod
    def _hand_out_token(request: HttpRequest, response: HttpResponse) -> None:
        if not registry().primary_available():
            return
        lsn = consistency.primary_position()
        if lsn is None:
            return
        token = consistency.token_for(lsn)
        response[consistency.HEADER] = token
        response.set_cookie(
            consistency.COOKIE,
            token,
            max_age=consistency.TOKEN_MAX_AGE_SECONDS,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            consistency.remember_user_lsn(user.pk, lsn)
