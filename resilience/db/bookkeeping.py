"""Best-effort writes: bookkeeping on a read path (last_login, outstanding-token rows) never fails a request.

With the primary down such a write raises ReadOnlyModeError (a DatabaseError) at once; it is logged and
skipped. A savepoint keeps a surrounding transaction usable when the write fails inside one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, transaction

logger = logging.getLogger("resilience.db")
T = TypeVar("T")


def best_effort(what: str, write: Callable[[], T]) -> T | None:
    """Run ``write``; on a database failure log it, skip it and return None."""
    try:
        with transaction.atomic():
            return write()
    except DatabaseError as exc:
        logger.warning(
            "skipped best-effort write (%s): %s", what, exc, extra={"event": "db_bookkeeping_skipped", "what": what}
        )
        return None
