"""Django's PostgreSQL backend, plus node awareness.

- A connection attempt to a node whose breaker is open fails at once (no timeout paid per request).
- A failed connect, or a connection-level error on a query, opens that node's breaker and is recorded
  in the request's routing state (the middleware then re-runs a read-only request elsewhere).
- Every query runs under a client-side deadline (:mod:`resilience.db.watchdog`): a hung node cannot
  hold a worker past it. Django's connection health check gets the same deadline.
- SQLSTATE 25006 (read-only transaction) on the primary alias means the node was demoted: the
  connection is discarded (the request is retried once by the middleware).
- A connection opened before its node's last outage that fails its health check is stale, not news: it is
  replaced without marking the node down again (else a node that came back flaps once per idle thread).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from django.db import DatabaseError as DjangoDatabaseError
from django.db.backends.postgresql import base as postgresql

from resilience.db import context
from resilience.db.exceptions import NodeDownError
from resilience.db.nodes import PRIMARY, registry
from resilience.db.watchdog import watchdog

logger = logging.getLogger("resilience.db")

# SQLSTATE classes that mean "this connection or node is gone", not "this query is wrong".
_CONNECTION_FAILURE_PREFIXES = ("08", "57P")
READ_ONLY_SQL_TRANSACTION = "25006"
QUERY_CANCELED = "57014"


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, DjangoDatabaseError) else exc
    return getattr(cause, "sqlstate", None)


class DatabaseWrapper(postgresql.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(self._guard_query)
        self.opened_at = 0.0  # wall clock (as NodeState.changed_at) when the current connection was opened

    @property
    def query_deadline(self) -> float:
        return float(self.settings_dict.get("QUERY_DEADLINE", 5.0))

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        nodes = registry()
        if not nodes.may_connect(self.alias):
            context.record_failure(self.alias)
            raise NodeDownError(f"database node {self.alias} is down (breaker open); not connecting")
        try:
            connection = super().get_new_connection(conn_params)
        except psycopg.Error as exc:
            nodes.mark_down(self.alias, exc)
            context.record_failure(self.alias)
            raise
        self.opened_at = time.time()
        return connection

    @property
    def health_check_deadline(self) -> float:
        """``SELECT 1`` is instant on a live node: give it no longer than a connection attempt."""
        connect_timeout = float(self.settings_dict["OPTIONS"].get("connect_timeout", 2))
        return min(self.query_deadline, connect_timeout + 1)

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        ticket = watchdog.arm(self.connection.pgconn.socket, self.health_check_deadline, self.alias)
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except psycopg.Error as exc:
            if self._predates_recovery():
                # Opened before the node's last outage and found dead by this thread only now: stale, not news.
                # Django reconnects; if the node is down again, that attempt marks it down.
                logger.info("discarding a connection to %s opened before its last outage", self.alias)
            else:
                self._connection_failed(exc)
            return False
        finally:
            watchdog.disarm(ticket)
        return True

    def _guard_query(self, execute: Any, sql: str, params: Any, many: bool, ctx: dict[str, Any]) -> Any:
        connection = self.connection
        ticket = None
        if connection is not None and not connection.closed:
            ticket = watchdog.arm(connection.pgconn.socket, self.query_deadline, self.alias)
        try:
            return execute(sql, params, many, ctx)
        except DjangoDatabaseError as exc:
            self._query_failed(exc)
            raise
        finally:
            if ticket is not None:
                watchdog.disarm(ticket)

    def _query_failed(self, exc: DjangoDatabaseError) -> None:
        sqlstate = _sqlstate(exc)
        if sqlstate == READ_ONLY_SQL_TRANSACTION and self.alias == PRIMARY:
            logger.warning(
                "the primary connection is on a read-only node (demoted?); discarding it",
                extra={"event": "db_primary_read_only", "node": self.alias},
            )
            context.record_failure(self.alias, read_only=True)
            self.errors_occurred = True
            self.close_at = 0  # Django closes it at the end of the request, whatever the transaction state
            return
        if sqlstate == QUERY_CANCELED:
            context.record_failure(self.alias)  # too slow here: a read-only request may run elsewhere
            return
        broken = self.connection is None or self.connection.closed or self.connection.broken
        if (
            broken
            or (sqlstate or "").startswith(_CONNECTION_FAILURE_PREFIXES)
            or (sqlstate is None and isinstance(exc.__cause__, psycopg.OperationalError))
        ):
            self._connection_failed(exc)

    def _predates_recovery(self) -> bool:
        """Whether the node went down and came back up (per this process) after this connection was opened."""
        try:
            state = registry().state(self.alias)
        except KeyError:  # an alias the registry does not know (a test's)
            return False
        return state.reachable and self.opened_at < state.changed_at

    def _connection_failed(self, exc: BaseException) -> None:
        registry().mark_down(self.alias, exc.__cause__ or exc)
        context.record_failure(self.alias)
