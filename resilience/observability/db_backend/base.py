"""``resilience.db.backend`` with django-prometheus's connection and query metrics.

django-prometheus's own PostgreSQL backend would replace Bulwark's; this combines them: its
``DatabaseWrapperMixin`` (``django_db_new_connections_total``, ``django_db_new_connection_errors_total``) over
Bulwark's ``DatabaseWrapper``, and its counting cursor class (``django_db_execute_total``,
``django_db_query_duration_seconds``, ``django_db_errors_total``) as the ``cursor_factory`` of each connection
Django opens, while Bulwark's (Django's psycopg 3) ``create_cursor`` is kept: the mixin's is psycopg2-style.

What is not counted, so the numbers mean requests' work:

- a connection refused without an attempt (the node's breaker open, or the node suspect): neither a connection
  nor a connection error (``bulwark_db_node_up`` says the node is down);
- the ``SELECT 1`` of Django's connection health check (``is_usable``), which runs once per request and
  connection;
- the node monitor's probes: it opens connections of its own from ``get_connection_params()``, which stays
  uncounted (only ``get_new_connection`` installs the counting cursor).

Queries of the monitor's housekeeping tasks (they use Django's connections) are counted.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django_prometheus.db.common import DatabaseWrapperMixin, ExportingCursorWrapper

from resilience.db.backend import base as bulwark
from resilience.db.nodes import registry

_health_check: ContextVar[bool] = ContextVar("bulwark_db_health_check", default=False)


def counting_cursor(cursor_class: type, alias: str, vendor: str) -> type:
    """django-prometheus's counting cursor over ``cursor_class``, silent during a connection health check."""
    counted = ExportingCursorWrapper(cursor_class, alias, vendor)

    class CountingCursor(counted):  # type: ignore[misc, valid-type]
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            if _health_check.get():
                return cursor_class.execute(self, *args, **kwargs)
            return super().execute(*args, **kwargs)

    return CountingCursor


class DatabaseWrapper(DatabaseWrapperMixin, bulwark.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not registry().may_connect(self.alias):
            # Refused before any attempt (raises NodeDownError): not a connection, not a connection error.
            return bulwark.DatabaseWrapper.get_new_connection(self, conn_params)
        params = {
            **conn_params,
            "cursor_factory": counting_cursor(conn_params["cursor_factory"], self.alias, self.vendor),
        }
        return super().get_new_connection(params)

    def create_cursor(self, name: str | None = None) -> Any:
        return bulwark.DatabaseWrapper.create_cursor(self, name=name)

    def is_usable(self) -> bool:
        token = _health_check.set(True)
        try:
            return super().is_usable()
        finally:
            _health_check.reset(token)
