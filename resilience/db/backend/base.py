"""Django's PostgreSQL backend, plus node awareness.

- A connection attempt to a node whose breaker is open, or that is suspect (its probe overdue), fails at once;
  any other attempt is bounded by ``CONNECT_DEADLINE`` (0.5 s), below libpq's 2 s floor (:mod:`.connect`).
- A failed connect, or a connection-level error on a query, opens that node's breaker and is recorded
  in the request's routing state (the middleware then re-runs a read-only request elsewhere).
- Every query runs under a client-side deadline (:mod:`resilience.db.watchdog`): a hung node cannot
  hold a worker past it. Django's connection health check gets the same deadline.
- COMMIT and ROLLBACK run under the same deadline (they too wait forever on a hung node). A write that fails
  after it reached the primary -- its COMMIT, or a statement in autocommit -- may have committed: the request
  is told so (``503 outcome_unknown``), never "nothing was written".
- A statement still running at the node deadline on a node that is up is first cancelled (a PostgreSQL cancel
  request): a statement waiting on a lock is slow, not a failed node, and the node is not marked down for it. The
  socket is cut -- and the node marked down -- only if the cancel does not take within the watchdog's grace, or
  at once when the node is already down or suspect. A read-only request so cancelled may run again elsewhere.
- A request's time budget (:mod:`resilience.serving.budget`) also bounds each statement: at the budget the
  statement is cancelled with a PostgreSQL cancel request (sent from a small thread pool, never the watchdog's
  thread), the node is not blamed and the connection stays usable, and the request answers ``504
  request_timeout``; a statement that would start with the budget spent is not sent. COMMIT and ROLLBACK are
  never cut by the budget (a cut COMMIT would leave the outcome unknown), only by the node deadline.
- SQLSTATE 25006 (read-only transaction) on the primary alias means the node was demoted: the
  connection is discarded (the request is retried once by the middleware).
- A connection opened before its node's last outage that fails its health check is stale, not news: it is
  replaced without marking the node down again (else a node that came back flaps once per idle thread). So is
  one whose health check fails at once (the server ended it while idle, or this process was frozen): the new
  connection that replaces it says whether the node is down. Only a health check cut off at its deadline (a
  hung node) marks the node down by itself.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import DatabaseError as DjangoDatabaseError
from django.db.backends.postgresql import base as postgresql

from resilience.db import context, libpq
from resilience.db.backend.connect import PsycopgWithDeadline, connect_deadline
from resilience.db.exceptions import NodeDownError, StatementBudgetError
from resilience.db.nodes import PRIMARY, registry
from resilience.db.watchdog import watchdog
from resilience.serving.budget import budget_cut, budget_remaining

logger = logging.getLogger("resilience.db")

# SQLSTATE classes that mean "this connection or node is gone", not "this query is wrong".
_CONNECTION_FAILURE_PREFIXES = ("08", "57P")
READ_ONLY_SQL_TRANSACTION = "25006"
# Statements that change no data (reads, session settings, transaction control): a request that ran only these
# wrote nothing, and cut off in autocommit they leave no doubt about what was written.
_READING_STATEMENTS = ("SELECT", "SHOW", "SET", "EXPLAIN", "VALUES", "SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN")
QUERY_CANCELED = "57014"


CANCEL_TIMEOUT = 1.0  # seconds a cancel request may take (a hung node: the node deadline still cuts the socket)
BUDGET = "budget"
DEADLINE = "deadline"


@dataclass
class _StatementGuard:
    """One statement that may be cancelled: at its request's budget, or first thing at the node deadline.

    ``fired`` says which asked for the cancel (a 57014 that follows is then ours, not the server's).
    """

    connection: Any  # the psycopg connection
    label: str
    active: bool = True
    fired: str | None = None  # BUDGET or DEADLINE
    # Held while a cancel is sent, and to end the statement: a cancel never goes out after its statement ended
    # (it would cancel the next statement on the connection).
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Canceller:
    """Sends cancel requests off the watchdog's thread (a cancel opens a connection: it may take a while)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def send(self, guard: _StatementGuard, reason: str) -> bool:  # on the watchdog's thread: never block it
        if not guard.active or guard.fired is not None:
            return False
        guard.fired = reason
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="db-cancel")
            pool = self._pool
        pool.submit(self._cancel, guard)
        return True

    def at_deadline(self, guard: _StatementGuard, alias: str) -> bool:
        """The node deadline passed: cancel (the watchdog cuts the socket if that does not take) -- unless the
        node is down or suspect, when there is nobody to ask and the cut comes at once."""
        if not registry().answering(alias):
            return False
        return self.send(guard, DEADLINE)

    @staticmethod
    def _cancel(guard: _StatementGuard) -> None:
        with guard.lock:
            if not guard.active:
                return  # the statement ended meanwhile: a cancel now could hit the next one
            try:
                guard.connection.cancel_safe(timeout=CANCEL_TIMEOUT)
            except psycopg.Error as exc:
                logger.warning("could not cancel a statement on %s (%s): %s", guard.label, guard.fired, exc)


_canceller = _Canceller()


def _reads_only(sql: str) -> bool:
    return sql.lstrip().split(None, 1)[0].upper() in _READING_STATEMENTS if sql.strip() else True


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, DjangoDatabaseError) else exc
    return getattr(cause, "sqlstate", None)


class DatabaseWrapper(postgresql.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.Database = PsycopgWithDeadline()  # connection attempts bounded by CONNECT_DEADLINE, below libpq's 2 s
        self.execute_wrappers.append(self._guard_query)
        self.opened_at = 0.0  # wall clock (as NodeState.changed_at) when the current connection was opened
        self._peer: tuple[Any, int, int] | None = None  # (psycopg connection, its socket, its server port)

    @property
    def query_deadline(self) -> float:
        return float(self.settings_dict.get("QUERY_DEADLINE", 5.0))

    @property
    def connect_deadline(self) -> float | None:
        """A request's connection attempt: a live node answers in milliseconds; a hung one is given up on fast.

        None (libpq's ``connect_timeout``, at least 2 s) in the seed-style naive mode, which the benchmark measures
        as it was: no breakers, no monitor, none of the deadlines that come with them.
        """
        if registry().naive:
            return None
        return float(self.settings_dict.get("CONNECT_DEADLINE", 0.5))

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        nodes = registry()
        if not nodes.may_connect(self.alias):
            context.record_failure(self.alias)
            raise NodeDownError(f"database node {self.alias} is down (breaker open); not connecting")
        token = connect_deadline.set(self.connect_deadline)
        try:
            connection = super().get_new_connection(conn_params)
        except psycopg.Error as exc:
            nodes.mark_down(self.alias, exc)
            context.record_failure(self.alias)
            raise
        finally:
            connect_deadline.reset(token)
        self.opened_at = time.time()
        return connection

    @property
    def health_check_deadline(self) -> float:
        """``SELECT 1`` is instant on a live node: give it twice what a connection attempt may take."""
        connect = self.connect_deadline
        if connect is None:  # the naive mode: a connection attempt's libpq timeout, plus a second
            connect = (float(self.settings_dict["OPTIONS"].get("connect_timeout", 2)) + 1) / 2
        return min(self.query_deadline, 2 * connect)

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        if not registry().may_connect(self.alias):
            return False  # down or suspect: not worth a health check on an open connection (a hung node never answers)
        state = context.current()
        rerunnable = state is not None and state.safe_method and not state.wrote
        ticket = self._arm(self.connection, self.health_check_deadline, rerunnable=rerunnable)
        started = time.monotonic()
        try:
            libpq.rows(self.connection, "SELECT 1")  # once per request: on libpq, a quarter of a cursor's CPU
        except psycopg.Error as exc:
            if watchdog.hedged(ticket):
                return False  # the node is suspect: Django reconnects, which a suspect node refuses (fast)
            if self._predates_recovery():
                # Opened before the node's last outage and found dead by this thread only now: stale, not news.
                # Django reconnects; if the node is down again, that attempt marks it down.
                logger.info("discarding a connection to %s opened before its last outage", self.alias)
            elif time.monotonic() - started < self.health_check_deadline:
                # Failed at once, not timed out: this connection is gone (the server ended it while idle, a proxy
                # restarted, this process was frozen past an idle timeout). Whether the node is down is for the
                # new connection Django opens next to say: a dead node refuses it at once and is marked down then.
                logger.info("discarding a connection to %s that is gone: %s", self.alias, exc)
            else:
                self._connection_failed(exc)  # cut off at the deadline: the node hangs
            return False
        finally:
            watchdog.disarm(ticket)
        return True

    def _guard_query(self, execute: Any, sql: str, params: Any, many: bool, ctx: dict[str, Any]) -> Any:
        writes = self.alias == PRIMARY and not _reads_only(sql)
        if writes:
            context.record_write()  # raw SQL too: a request that wrote is never run again
        commits_itself = writes and self.get_autocommit()
        state = context.current()
        rerunnable = state is not None and state.safe_method and not state.wrote and not writes
        budget = budget_remaining()
        if budget is not None and budget <= 0:
            raise budget_cut(StatementBudgetError)  # not sent: nothing of it reached the node
        # One statement: its guard (whoever cancels it does so only while it runs), the node deadline (a cancel tried
        # first: a statement slow on a node that answers -- a lock wait -- must not mark the node down) and the budget
        # timer -- inline rather than three context managers: this runs for every statement.
        connection = self.connection
        guard = ticket = budget_ticket = None
        if connection is not None and not connection.closed:
            guard = _StatementGuard(connection, self.alias)
            ticket = self._arm(connection, self.query_deadline, rerunnable=rerunnable, guard=guard)
            if budget is not None and budget < self.query_deadline:
                budget_ticket = watchdog.call_after(
                    budget, functools.partial(_canceller.send, guard, BUDGET), f"{self.alias} (budget)"
                )
        try:
            return execute(sql, params, many, ctx)
        except DjangoDatabaseError as exc:
            cancelled = guard is not None and _sqlstate(exc) == QUERY_CANCELED
            if cancelled and guard.fired == BUDGET:
                # Cancelled at the budget: the node is fine (it obeyed), the request is out of time.
                raise budget_cut(StatementBudgetError) from exc
            if cancelled and guard.fired == DEADLINE:
                logger.warning(
                    "a statement on %s ran past its deadline (%g s) and was cancelled; the node answers",
                    self.alias,
                    self.query_deadline,
                    extra={"event": "db_statement_cancelled", "node": self.alias},
                )
            if ticket is not None and watchdog.hedged(ticket):
                # Cut off because the node is suspect (its probe overdue), not found dead: the middleware
                # runs the request again elsewhere; the probe, not this read, decides whether it is down.
                context.record_failure(self.alias)
                raise
            if self._query_failed(exc) and commits_itself:
                context.record_outcome_unknown()
            raise
        finally:
            if budget_ticket is not None:
                watchdog.disarm(budget_ticket)
            if ticket is not None:
                watchdog.disarm(ticket)
            if guard is not None:
                with guard.lock:  # waits for a cancel being sent right now (at most CANCEL_TIMEOUT)
                    guard.active = False

    def _arm(
        self, connection: Any, seconds: float, *, rerunnable: bool = False, guard: _StatementGuard | None = None
    ) -> int:
        """The watchdog's deadline on this connection's socket; with a ``guard``, a cancel is tried at it first."""
        peer = self._peer
        if peer is None or peer[0] is not connection:  # a new connection: its socket and port, read once
            peer = self._peer = (connection, connection.pgconn.socket, connection.info.port)
        return watchdog.arm(
            peer[1],
            seconds,
            self.alias,
            port=peer[2],
            rerunnable=rerunnable,
            cancel=None if guard is None else functools.partial(_canceller.at_deadline, guard, self.alias),
        )

    def _commit(self) -> None:
        with self._deadline():
            try:
                super()._commit()
            except DjangoDatabaseError as exc:
                if self._query_failed(exc) and self.alias == PRIMARY:
                    context.record_outcome_unknown()  # the COMMIT was sent: it may have been applied
                raise

    def _rollback(self) -> None:
        with self._deadline():
            try:
                super()._rollback()
            except DjangoDatabaseError as exc:
                self._query_failed(exc)
                raise

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """The node deadline around COMMIT and ROLLBACK (never cut by the budget: a cut COMMIT leaves the outcome
        unknown)."""
        connection = self.connection
        ticket = None
        if connection is not None and not connection.closed:
            ticket = self._arm(connection, self.query_deadline)
        try:
            yield
        finally:
            if ticket is not None:
                watchdog.disarm(ticket)

    def _query_failed(self, exc: DjangoDatabaseError) -> bool:
        """Record what a failed query says about its node; True when the connection failed (not the query)."""
        sqlstate = _sqlstate(exc)
        if sqlstate == READ_ONLY_SQL_TRANSACTION and self.alias == PRIMARY:
            logger.warning(
                "the primary connection is on a read-only node (demoted?); discarding it",
                extra={"event": "db_primary_read_only", "node": self.alias},
            )
            context.record_failure(self.alias, read_only=True)
            self.errors_occurred = True
            self.close_at = 0  # Django closes it at the end of the request, whatever the transaction state
            return False  # refused before anything was written
        if sqlstate == QUERY_CANCELED:
            context.record_failure(self.alias)  # too slow here: a read-only request may run elsewhere
            return False
        broken = self.connection is None or self.connection.closed or self.connection.broken
        if (
            broken
            or (sqlstate or "").startswith(_CONNECTION_FAILURE_PREFIXES)
            or (sqlstate is None and isinstance(exc.__cause__, psycopg.OperationalError))
        ):
            self._connection_failed(exc)
            return True
        return False

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
