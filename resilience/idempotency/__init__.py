"""Idempotent POSTs: a retried request with the same ``Idempotency-Key`` gets the first answer.

The record and the work it guards commit in one transaction, so an acknowledged result is
never lost and never done twice. A concurrent retry blocks on the record's unique index until
the first commits, then replays its response; if the first failed (rolled back), the retry
runs afresh. Only successful responses are stored: an error leaves nothing behind.
Depends only on the primary database; when it is down the guarded write cannot run either.
"""
