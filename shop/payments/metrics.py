"""``bulwark_payments_pending``: payments waiting to be collected (orders kept ``pending_payment``).

Counted from the database by a task on the node monitor's housekeeping thread (registered in
``ShopConfig.ready``) every :data:`REFRESH_SECONDS`, never at scrape time; only while the primary answers (no
payment can be created without it), reading wherever the router sends a read. One series per worker, the
highest shown (``livemax``): every worker counts the same rows.
"""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError
from prometheus_client import Gauge

from shop.payments.models import Payment, PaymentStatus

logger = logging.getLogger("shop.payments")

REFRESH_SECONDS = 5.0
PAYMENTS_PENDING = Gauge(
    "bulwark_payments_pending",
    "Payments not collected yet (pending), counted from the database every few seconds.",
    multiprocess_mode="livemax",
)
_refreshed_at = -float("inf")
_failing = False


def payments_pending_refresh(*, force: bool = False) -> None:
    """Count the pending payments (at most every REFRESH_SECONDS; a monitor task calls it every second)."""
    global _refreshed_at, _failing
    now = time.monotonic()
    if not force and now - _refreshed_at < REFRESH_SECONDS:
        return
    _refreshed_at = now
    try:
        pending = Payment.objects.filter(status=PaymentStatus.PENDING).count()
    except DatabaseError as exc:  # a node failed under the count: the gauge keeps its last value
        if not _failing:
            logger.warning("bulwark_payments_pending not refreshed: %s", exc)
        _failing = True
        return
    _failing = False
    PAYMENTS_PENDING.set(pending)
