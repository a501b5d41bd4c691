"""Run a handler at most once per (user, scope, key) and replay its stored response."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from resilience.errors import IdempotencyKeyMismatchError
from resilience.idempotency.models import IdempotencyRecord


@dataclass(frozen=True)
class IdempotentResponse:
    status: int
    body: Any
    replayed: bool


def request_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


@transaction.atomic
def idempotent_call(
    *,
    user: AbstractBaseUser,
    scope: str,
    key: str,
    request_body: Any,
    handler: Callable[[], tuple[int, Any]],
) -> IdempotentResponse:
    """Run ``handler`` (returning status and JSON body) once for this key; replay it on a retry.

    Raises IdempotencyKeyMismatchError when the key was used with another request body.
    """
    fingerprint = request_fingerprint(request_body)
    expired_before = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    IdempotencyRecord.objects.filter(user=user, scope=scope, key=key, created_at__lt=expired_before).delete()
    # A concurrent first request holds this row uncommitted: get_or_create's INSERT waits for it,
    # then finds the committed record and we replay it.
    record, created = IdempotencyRecord.objects.get_or_create(
        user=user,
        scope=scope,
        key=key,
        defaults={"fingerprint": fingerprint, "response_status": 0, "response_body": ""},
    )
    if not created:
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyMismatchError()
        return IdempotentResponse(status=record.response_status, body=json.loads(record.response_body), replayed=True)
    status, body = handler()
    record.response_status = status
    record.response_body = json.dumps(body, cls=DjangoJSONEncoder)
    record.save(update_fields=["response_status", "response_body"])
    return IdempotentResponse(status=status, body=body, replayed=False)
