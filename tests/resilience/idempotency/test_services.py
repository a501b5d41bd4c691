from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from resilience.idempotency.exceptions import IdempotencyKeyMismatchError
from resilience.idempotency.models import IdempotencyRecord
from resilience.idempotency.services import idempotent_call, request_fingerprint
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SCOPE = "tests.scope"


class CountingHandler:
    """A handler that counts its calls and answers a new body each time."""

    def __init__(self, status: int = 201) -> None:
        self.calls = 0
        self.status = status

    def __call__(self) -> tuple[int, dict]:
        self.calls += 1
        return self.status, {"call": self.calls, "amount": "1.50"}


def _call(user, handler, key="key-1", body=None, scope=SCOPE):
    return idempotent_call(user=user, scope=scope, key=key, request_body=body or {}, handler=handler)


def test_idempotent_call_runs_handler_once_then_replays(user):
    handler = CountingHandler()
    first = _call(user, handler)
    replay = _call(user, handler)
    assert handler.calls == 1
    assert (first.status, first.body, first.replayed) == (201, {"call": 1, "amount": "1.50"}, False)
    assert (replay.status, replay.body, replay.replayed) == (201, {"call": 1, "amount": "1.50"}, True)
    assert IdempotencyRecord.objects.filter(user=user, scope=SCOPE, key="key-1").count() == 1


def test_idempotent_call_replays_stored_status(user):
    _call(user, CountingHandler(status=202))
    assert _call(user, CountingHandler()).status == 202


def test_idempotent_call_same_key_different_body_raises_mismatch(user):
    handler = CountingHandler()
    _call(user, handler, body={"note": "a"})
    with pytest.raises(IdempotencyKeyMismatchError) as excinfo:
        _call(user, handler, body={"note": "b"})
    assert excinfo.value.code == "idempotency_key_mismatch"
    assert excinfo.value.http_status == 422
    assert handler.calls == 1


def test_idempotent_call_body_key_order_does_not_matter(user):
    handler = CountingHandler()
    _call(user, handler, body={"a": 1, "b": 2})
    assert _call(user, handler, body={"b": 2, "a": 1}).replayed
    assert handler.calls == 1


def test_idempotent_call_keys_are_scoped_per_user(user):
    handler = CountingHandler()
    mine = _call(user, handler)
    theirs = _call(UserFactory(), handler)
    assert handler.calls == 2
    assert not theirs.replayed
    assert theirs.body != mine.body


def test_idempotent_call_keys_are_scoped_per_scope(user):
    handler = CountingHandler()
    _call(user, handler, scope="orders.create")
    assert not _call(user, handler, scope="other.scope").replayed
    assert handler.calls == 2


def test_idempotent_call_key_older_than_ttl_is_treated_as_new(user):
    handler = CountingHandler()
    _call(user, handler, body={"note": "a"})
    IdempotencyRecord.objects.filter(user=user).update(created_at=timezone.now() - timedelta(hours=24, seconds=1))

    again = _call(user, handler, body={"note": "b"})  # a different body is no mismatch once the key expired

    assert not again.replayed
    assert again.body["call"] == 2
    assert IdempotencyRecord.objects.filter(user=user).count() == 1


def test_idempotent_call_failed_handler_leaves_nothing_stored(user):
    def failing() -> tuple[int, dict]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _call(user, failing)
    assert not IdempotencyRecord.objects.filter(user=user).exists()

    handler = CountingHandler()
    result = _call(user, handler)
    assert not result.replayed
    assert handler.calls == 1


def test_idempotent_call_stores_json_safe_body(user):
    _call(user, lambda: (201, {"total": Decimal("9.90")}))
    record = IdempotencyRecord.objects.get(user=user)
    assert record.response_status == 201
    assert record.response_body == '{"total": "9.90"}'  # the JSON text as sent, key order kept
    assert _call(user, CountingHandler()).body == {"total": "9.90"}


def test_request_fingerprint_is_stable_and_distinguishes_bodies():
    assert request_fingerprint({"a": 1, "b": [1, 2]}) == request_fingerprint({"b": [1, 2], "a": 1})
    assert request_fingerprint({}) != request_fingerprint({"a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": "1"})
    assert len(request_fingerprint(None)) == 64


# finishing after the commit (checkout collecting the payment outside the transaction)


def test_finish_runs_after_the_handler_and_its_response_is_stored_and_replayed(user):
    handler = CountingHandler()
    seen = []

    def finish(status: int, body: dict) -> tuple[int, dict]:
        seen.append((status, body))
        return status, {**body, "finished": True}

    first = idempotent_call(user=user, scope=SCOPE, key="f", request_body={}, handler=handler, finish=finish)
    replay = idempotent_call(user=user, scope=SCOPE, key="f", request_body={}, handler=handler, finish=finish)
    assert seen == [(201, {"call": 1, "amount": "1.50"})]
    assert first.body == {"call": 1, "amount": "1.50", "finished": True} and not first.replayed
    assert replay.body == first.body and replay.replayed
    assert IdempotencyRecord.objects.get(key="f").complete


def test_retry_of_a_never_finished_request_replays_the_provisional_response_after_waiting(user):
    IdempotencyRecord.objects.create(
        user=user,
        scope=SCOPE,
        key="stuck",
        fingerprint=request_fingerprint({}),
        response_status=201,
        response_body='{"id": 7, "status": "pending_payment"}',
        complete=False,
    )
    handler = CountingHandler()
    started = time.monotonic()
    result = idempotent_call(
        user=user, scope=SCOPE, key="stuck", request_body={}, handler=handler, finish=None, finish_wait=0.3
    )
    assert time.monotonic() - started >= 0.3
    assert (result.status, result.body, result.replayed) == (201, {"id": 7, "status": "pending_payment"}, True)
    assert handler.calls == 0


@pytest.mark.django_db(transaction=True)  # the first request's thread must see, and write, committed rows
def test_retry_waits_for_an_unfinished_request_and_replays_its_final_response(user):
    record = IdempotencyRecord.objects.create(
        user=user,
        scope=SCOPE,
        key="busy",
        fingerprint=request_fingerprint({}),
        response_status=201,
        response_body='{"status": "pending_payment"}',
        complete=False,
    )
    retry_read_it = threading.Event()  # the retry has read the record (still incomplete: nobody completed it yet)
    completed = threading.Event()

    def first_request_finishes() -> None:  # on its own thread and connection, like the first request
        try:
            if retry_read_it.wait(timeout=10):
                time.sleep(0.3)  # the retry keeps polling meanwhile
                IdempotencyRecord.objects.filter(pk=record.pk).update(response_body='{"status": "paid"}', complete=True)
                completed.set()
        finally:
            connection.close()

    def watch(execute, sql, params, many, ctx):
        result = execute(sql, params, many, ctx)
        if sql.lstrip().upper().startswith("SELECT") and IdempotencyRecord._meta.db_table in sql:
            retry_read_it.set()
        return result

    finisher = threading.Thread(target=first_request_finishes, daemon=True)
    finisher.start()
    handler = CountingHandler()
    with connection.execute_wrapper(watch):
        result = idempotent_call(
            user=user, scope=SCOPE, key="busy", request_body={}, handler=handler, finish=None, finish_wait=30
        )
    returned_after_completion = completed.is_set()
    finisher.join(timeout=10)
    assert not finisher.is_alive()
    # The record was incomplete when the retry first read it; the final body can only come from a read after
    # the other thread's commit, so the retry waited for it (and not for its whole finish_wait).
    assert returned_after_completion
    assert (result.status, result.body, result.replayed) == (201, {"status": "paid"}, True)
    assert handler.calls == 0
