"""Run a handler at most once per (user, scope, key) and replay its stored response.

Two phases when the work has a part that must not run inside a database transaction (an external call):

1. In one transaction: claim the key, run ``handler`` (the database work), store its response as
   provisional (``complete=False``). A concurrent retry blocks on the key's unique index until this commits.
2. After the commit, outside any transaction: ``finish(status, body)`` returns the final response (e.g. the
   order after its payment was collected), which is stored (``complete=True``) and sent.

A retry that finds a record not yet complete waits for it (polling, up to ``finish_wait`` seconds and never past
the request's time budget) and replays the final response, so every replay is the response the first client got.
If the first request never completes it (its process died mid-way, or the database went away before the final
write), the retry replays the provisional response after ``finish_wait``: it is still true (the work committed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, transaction
from django.utils import timezone

from resilience.idempotency.exceptions import IdempotencyKeyMismatchError
from resilience.idempotency.models import IdempotencyRecord
from resilience.observability.metrics import idempotent_replayed
from resilience.serving.budget import budget_remaining

logger = logging.getLogger("resilience.idempotency")

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class IdempotentResponse:
    status: int
    body: Any
    replayed: bool


@dataclass(frozen=True)
class _Ran:
    record_pk: int
    status: int
    body: Any


@dataclass(frozen=True)
class _InProgress:
    record_pk: int


def request_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(record: IdempotencyRecord) -> IdempotentResponse:
    idempotent_replayed()
    return IdempotentResponse(status=record.response_status, body=json.loads(record.response_body), replayed=True)


@transaction.atomic
def _claim_and_run(
    *,
    user: AbstractBaseUser,
    scope: str,
    key: str,
    request_body: Any,
    handler: Callable[[], tuple[int, Any]],
    finishing: bool,
) -> IdempotentResponse | _Ran | _InProgress:
    fingerprint = request_fingerprint(request_body)
    expired_before = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    IdempotencyRecord.objects.filter(user=user, scope=scope, key=key, created_at__lt=expired_before).delete()
    # A concurrent first request holds this row uncommitted: get_or_create's INSERT waits for it,
    # then finds the committed record and we replay it.
    record, created = IdempotencyRecord.objects.get_or_create(
        user=user,
        scope=scope,
        key=key,
        defaults={"fingerprint": fingerprint, "response_status": 0, "response_body": "", "complete": False},
    )
    if not created:
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyMismatchError()
        return _replay(record) if record.complete else _InProgress(record.pk)
    status, body = handler()
    record.response_status = status
    record.response_body = json.dumps(body, cls=DjangoJSONEncoder)
    record.complete = not finishing
    record.save(update_fields=["response_status", "response_body", "complete"])
    return _Ran(record.pk, status, body)


def _complete(record_pk: int, status: int, body: Any) -> None:
    try:
        IdempotencyRecord.objects.filter(pk=record_pk).update(
            response_status=status, response_body=json.dumps(body, cls=DjangoJSONEncoder), complete=True
        )
    except DatabaseError as exc:  # the work is done and the client gets its answer; retries get the provisional
        logger.warning(
            "could not store the final idempotent response (record %s): %s",
            record_pk,
            exc,
            extra={"event": "idempotency_complete_failed", "record": record_pk},
        )


def _wait_for(record_pk: int, finish_wait: float) -> IdempotentResponse:
    budget = budget_remaining()  # the request's time budget: it replays the provisional response in time
    if budget is not None:
        finish_wait = min(finish_wait, max(0.0, budget - POLL_SECONDS))
    deadline = time.monotonic() + finish_wait
    while True:
        record = IdempotencyRecord.objects.get(pk=record_pk)
        if record.complete or time.monotonic() >= deadline:
            if not record.complete:
                logger.warning(
                    "idempotent request %s:%s never completed; replaying its provisional response",
                    record.scope,
                    record.key,
                    extra={"event": "idempotency_provisional_replay", "record": record_pk},
                )
            return _replay(record)
        time.sleep(POLL_SECONDS)


def idempotent_call(
    *,
    user: AbstractBaseUser,
    scope: str,
    key: str,
    request_body: Any,
    handler: Callable[[], tuple[int, Any]],
    finish: Callable[[int, Any], tuple[int, Any]] | None = None,
    finish_wait: float = 10.0,
) -> IdempotentResponse:
    """Run ``handler`` (returning status and JSON body) once for this key; replay it on a retry.

    ``handler`` runs in the key's transaction; ``finish``, when given, runs after that commit and outside
    any transaction and returns the final response (stored and replayed). Raises
    IdempotencyKeyMismatchError when the key was used with another request body.
    """
    outcome = _claim_and_run(
        user=user, scope=scope, key=key, request_body=request_body, handler=handler, finishing=finish is not None
    )
    if isinstance(outcome, IdempotentResponse):
        return outcome
    if isinstance(outcome, _InProgress):
        return _wait_for(outcome.record_pk, finish_wait)
    if finish is None:
        return IdempotentResponse(status=outcome.status, body=outcome.body, replayed=False)
    status, body = finish(outcome.status, outcome.body)
    _complete(outcome.record_pk, status, body)
    return IdempotentResponse(status=status, body=body, replayed=False)
