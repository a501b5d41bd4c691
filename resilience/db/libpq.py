"""A query on libpq itself, for the node monitor's probes (ten a second per node and worker, whatever the traffic)
and the engine's connection health check (a ``SELECT 1`` at the start of every request that reuses a connection).

psycopg's cursor layer (a cursor, the query's preparation, a loader per column, the rows built) is most of such a
query's CPU in this process: the replica probe took 350 us through a cursor and 175 us on libpq with 10 ms between
probes (caches cold, as on a worker between probes), 75-85 us and 17-20 us in a tight loop (``time.thread_time_ns``,
the system calls included). These queries take no parameters and return a few booleans, numbers and texts, so
:func:`rows` sends them with ``PQexec`` (psycopg's binary ``pq`` releases the GIL while it waits, and a socket cut
by the watchdog ends it at once as it does a cursor's) and turns the text values back into Python values itself.
The connection stays a psycopg one (its connect deadline, ``closed`` and ``broken``); errors are psycopg's own
classes (an ``UndefinedTable`` stays one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors, pq

_BOOL, _INT2, _INT4, _INT8, _FLOAT4, _FLOAT8, _NUMERIC = 16, 21, 23, 20, 700, 701, 1700
_PARSERS: dict[int, Callable[[bytes], Any]] = {
    _BOOL: lambda value: value == b"t",
    **dict.fromkeys((_INT2, _INT4, _INT8), int),
    **dict.fromkeys((_FLOAT4, _FLOAT8, _NUMERIC), float),
}


def _text(value: bytes) -> str:
    return value.decode()


def rows(conn: psycopg.Connection, sql: str) -> list[tuple[Any, ...]]:
    """``conn.execute(sql).fetchall()`` for a query without parameters, on libpq: booleans, integers and numbers as
    Python values (numeric as float), NULL as None, anything else as text."""
    result = conn.pgconn.exec_(sql.encode())
    if result.status != pq.ExecStatus.TUPLES_OK:
        if conn.pgconn.status == pq.ConnStatus.BAD:  # the connection is gone (cut, reset): no SQLSTATE to map
            raise psycopg.OperationalError(result.get_error_message())
        raise errors.error_from_result(result)
    parsers = [_PARSERS.get(result.ftype(column), _text) for column in range(result.nfields)]
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else parse(value)
            for column, parse in enumerate(parsers)
        )
        for row in range(result.ntuples)
    ]
