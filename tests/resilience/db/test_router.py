"""The router, asserted from what each connection actually executed (real primary and replica)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from resilience.controls.state import DRAIN_PREFIX, PRIMARY_ONLY_READS, READ_ONLY, controls_replace
from resilience.db import context
from resilience.db.exceptions import ReadOnlyModeError
from resilience.db.lsn import lsn_to_int
from resilience.db.nodes import PRIMARY, registry
from resilience.db.router import FailoverRouter
from shop.catalog.models import Product
from tests.factories import ProductFactory

REPLICA = "replica_1"
pytestmark = [
    pytest.mark.replica_routing,
    pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
    pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
]


class Executed:
    """The SQL each node ran inside the block (a node whose breaker is open cannot run any)."""

    def __enter__(self) -> Executed:
        aliases = [alias for alias in (PRIMARY, REPLICA) if registry().may_connect(alias)]
        self._captures = {alias: CaptureQueriesContext(connections[alias]) for alias in aliases}
        for capture in self._captures.values():
            capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for capture in self._captures.values():
            capture.__exit__(*exc)

    def on(self, alias: str) -> list[str]:
        capture = self._captures.get(alias)
        return [query["sql"] for query in capture.captured_queries] if capture else []


def selects(sqls: list[str], table: str = "shop_product") -> list[str]:
    return [sql for sql in sqls if sql.startswith("SELECT") and table in sql]


@pytest.fixture
def product():
    return ProductFactory()


def test_read_goes_to_the_replica(product) -> None:
    with Executed() as executed:
        list(Product.objects.all())
    assert selects(executed.on(REPLICA)) and not selects(executed.on(PRIMARY))


def test_reads_inside_a_transaction_stay_on_the_primary(product) -> None:
    with Executed() as executed, transaction.atomic():
        list(Product.objects.all())
        Product.objects.filter(pk=product.pk).exists()
    assert not executed.on(REPLICA)
    assert len(selects(executed.on(PRIMARY))) == 2


def test_select_for_update_never_touches_the_replica(product) -> None:
    with Executed() as executed, transaction.atomic():
        Product.objects.select_for_update().get(pk=product.pk)
    assert not executed.on(REPLICA)
    assert any("FOR UPDATE" in sql for sql in executed.on(PRIMARY))


def test_replica_loaded_object_saves_to_the_primary(product) -> None:
    loaded = Product.objects.using(PRIMARY).get(pk=product.pk)
    loaded._state.db = REPLICA  # as if it had been read from the replica (which may not have it yet)
    with Executed() as executed:
        loaded.stock = 3
        loaded.save()
    assert not any(sql.startswith("UPDATE") for sql in executed.on(REPLICA))
    assert any(sql.startswith("UPDATE") for sql in executed.on(PRIMARY))


def test_reads_after_a_write_in_the_same_request_stay_on_the_primary(product) -> None:
    with context.routing(context.RoutingState()) as state, Executed() as executed:
        Product.objects.filter(pk=product.pk).update(stock=4)
        assert state.wrote
        list(Product.objects.all())
    assert not executed.on(REPLICA)
    assert selects(executed.on(PRIMARY))


def test_replica_down_reads_go_to_the_primary_without_a_connection_attempt(product) -> None:
    registry().mark_down(REPLICA, "killed in a test")
    connections[REPLICA].close()
    with Executed() as executed:
        list(Product.objects.all())
    assert not executed.on(REPLICA) and selects(executed.on(PRIMARY))
    assert connections[REPLICA].connection is None  # never connected


def test_primary_down_reads_continue_on_the_replica_and_pinned_reads_are_marked_stale(product) -> None:
    registry().mark_down(PRIMARY, "killed in a test")
    try:
        with context.routing(context.RoutingState(wrote=True)) as state, Executed() as executed:
            list(Product.objects.all())
        assert selects(executed.on(REPLICA)) and not executed.on(PRIMARY)
        assert state.stale
    finally:
        registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_primary_down_writes_are_refused_at_once(product) -> None:
    registry().mark_down(PRIMARY, "killed in a test")
    try:
        with pytest.raises(ReadOnlyModeError):
            Product.objects.filter(pk=product.pk).update(stock=1)
    finally:
        registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


def test_a_replica_behind_the_clients_write_is_not_used(product) -> None:
    with context.routing(context.RoutingState(min_lsn=2**62)), Executed() as executed:
        list(Product.objects.all())
    assert not selects(executed.on(REPLICA)) and selects(executed.on(PRIMARY))


def test_a_replica_that_replayed_the_clients_write_is_used(product) -> None:
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        written = lsn_to_int(cursor.fetchone()[0])
    deadline = time.monotonic() + 10  # the replica streams: it reaches this position within moments
    while time.monotonic() < deadline:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            if lsn_to_int(cursor.fetchone()[0]) >= written:
                break
        time.sleep(0.05)
    with context.routing(context.RoutingState(min_lsn=written)), Executed() as executed:
        list(Product.objects.all())
    assert selects(executed.on(REPLICA)) and not selects(executed.on(PRIMARY))


def test_lagging_replica_leaves_rotation_and_returns(product) -> None:
    nodes = registry()
    nodes.record_probe(REPLICA, in_recovery=True, lag_seconds=nodes.max_lag_seconds + 5, lag_bytes=10, replay_lsn=1)
    assert FailoverRouter().db_for_read(Product) == PRIMARY
    nodes.record_probe(REPLICA, in_recovery=True, lag_seconds=0, lag_bytes=0, replay_lsn=1)
    assert FailoverRouter().db_for_read(Product) == REPLICA


@pytest.mark.parametrize("switch", [f"{DRAIN_PREFIX}{REPLICA}", PRIMARY_ONLY_READS])
def test_drained_replica_and_primary_only_reads_keep_reads_on_the_primary(product, switch) -> None:
    controls_replace([(switch, True)])
    with Executed() as executed:
        list(Product.objects.all())
    assert not executed.on(REPLICA) and selects(executed.on(PRIMARY))


def test_read_only_mode_refuses_writes(product) -> None:
    controls_replace([(READ_ONLY, True)])
    with pytest.raises(ReadOnlyModeError):
        Product.objects.filter(pk=product.pk).update(stock=2)


def test_migrations_run_on_the_primary_only() -> None:
    router = FailoverRouter()
    assert router.allow_migrate(PRIMARY, "shop") is True
    assert router.allow_migrate(REPLICA, "shop") is False
