"""Idempotent POSTs: a retried request with the same ``Idempotency-Key`` gets the first answer.

The record and the work it guards commit in one transaction, so an acknowledged result is
never lost and never done twice. A concurrent retry blocks on the record's unique index until
the first commits, then replays its response; if the first failed (rolled back), the retry
runs afresh. Only successful responses are stored: an error leaves nothing behind.
Work that must run after the commit, outside any transaction (checkout collecting the payment
from the gateway), completes the record afterwards with the final response; until then a retry
waits for it rather than replaying the provisional one.
Depends only on the primary database; when it is down the guarded write cannot run either.
"""
