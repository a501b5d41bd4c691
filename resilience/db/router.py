"""The database router: replicas for reads, the primary for writes, transactions and read-your-writes.

Decisions use this process's node states (:mod:`.nodes`), the operator controls and the request's
routing state (:mod:`.context`). It never connects to a node known to be down.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, connections

from resilience.controls.state import db_controls
from resilience.db import context
from resilience.db.exceptions import MAINTENANCE_MESSAGE, ReadOnlyModeError
from resilience.db.lsn import lsn_to_int
from resilience.db.nodes import PRIMARY, NodeRegistry, registry
from resilience.observability.metrics import fallback_taken

logger = logging.getLogger("resilience.db")


def _replay_position(alias: str) -> int | None:
    """The replica's replay position right now (one cheap query), or None when it cannot tell."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            return lsn_to_int(cursor.fetchone()[0])
    except DatabaseError as exc:
        logger.info("could not read the replay position of %s: %s", alias, exc)
        return None


# Read-only mode (maintenance) stops the shop's writes, not the switches that end it, their audit trail, the
# resilience events, or a staff logout (the session epoch).
OPERATOR_MODELS = frozenset(
    {
        "resilience.operatorcontrol",
        "resilience.controlauditentry",
        "resilience.resilienceevent",
        "resilience.staffsessionepoch",
    }
)


class FailoverRouter:
    """Django database router (``DATABASE_ROUTERS``)."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        nodes = registry()
        state = context.current()
        controls = db_controls()
        if connections[PRIMARY].in_atomic_block:
            return PRIMARY  # everything inside a transaction sees the transaction's own writes
        # A read goes to the primary only while it is usable now: down or suspect (its probe overdue), a replica
        # that answers beats it, stale or not (the response says so).
        if controls.primary_only_reads or (state is not None and (state.wrote or state.force_primary)):
            if nodes.may_connect(PRIMARY):
                return PRIMARY
            return self._stale_replica(nodes, state, controls.drained) or PRIMARY
        replica = self._current_replica(nodes, state, controls.drained)
        if replica is not None:
            return replica
        if nodes.may_connect(PRIMARY):
            if nodes.replica_aliases:
                fallback_taken("replica_to_primary")  # no current replica for this read
            return PRIMARY
        return self._stale_replica(nodes, state, controls.drained) or PRIMARY

    def db_for_write(self, model: type, **hints: Any) -> str:
        if db_controls().read_only and model._meta.label_lower not in OPERATOR_MODELS:
            raise ReadOnlyModeError(MAINTENANCE_MESSAGE)
        if not registry().primary_available():
            raise ReadOnlyModeError()
        state = context.current()
        if state is not None:
            state.wrote = True
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # every node holds the same data

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == PRIMARY

    @staticmethod
    def _current_replica(
        nodes: NodeRegistry, state: context.RoutingState | None, drained: frozenset[str]
    ) -> str | None:
        excluded = drained | frozenset(state.failed if state else ())
        candidates = nodes.readable_replicas(excluded)
        if state is not None and state.replica in candidates:
            candidates.remove(state.replica)
            candidates.insert(0, state.replica)  # stay on one replica within a request
        min_lsn = state.min_lsn if state is not None else None
        for alias in candidates:
            if min_lsn is not None:
                replay = nodes.state(alias).replay_lsn
                if replay is None or replay < min_lsn:
                    replay = _replay_position(alias)
                    if replay is not None:
                        nodes.note_replay(alias, replay)
                if replay is None or replay < min_lsn:
                    continue  # this replica has not replayed the client's last write yet
            if state is not None:
                state.replica = alias
            return alias
        return None

    @staticmethod
    def _stale_replica(nodes: NodeRegistry, state: context.RoutingState | None, drained: frozenset[str]) -> str | None:
        """With the primary down, any replica that answers: stale beats down (the response says so)."""
        failed = state.failed if state else set()
        reachable = [alias for alias in nodes.reachable_replicas() if alias not in failed]
        preferred = [alias for alias in reachable if alias not in drained] or reachable
        if not preferred:
            return None
        if state is not None:
            state.stale = True
            state.replica = preferred[0]
        fallback_taken("stale_replica_read")
        return preferred[0]
