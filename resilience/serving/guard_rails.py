"""Guard rail of the serving layer (registered in ResilienceConfig.ready): scratch bulkheads with the live limits
shed a full class at once while the others and ops are still admitted, and one real statement on every database
node is cut at a short budget by a PostgreSQL cancel, the node kept up (a proxy in front of PostgreSQL that drops
cancel requests would make the budget wait for the node deadline instead: this shows it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.conf import settings
from django.db import connections, transaction

from resilience.db.exceptions import StatementBudgetError
from resilience.db.nodes import registry
from resilience.guard_rails import Line, guard_rail_register
from resilience.serving.budget import budget_end, budget_start
from resilience.serving.bulkheads import Bulkheads
from resilience.serving.classes import OPS, TRAFFIC_CLASSES

SCRATCH_BUDGET = 0.3  # seconds
CUT_WITHIN = 2.0  # the budget plus a cancel request's round trip, with room for a busy machine


def register() -> None:
    guard_rail_register("Serving: bulkheads and time budgets", check_serving)


def check_serving() -> Iterator[Line]:
    serving = settings.BULWARK_CONFIG.serving
    yield from _scratch_bulkheads(serving.limits, serving.threads)
    for alias in connections:
        if registry().may_connect(alias):
            yield _cut_at_budget(alias)
        else:
            yield ("warn", f"{alias} is down now: its statements are not tried (the database guard rail covers it)")


def _scratch_bulkheads(limits: dict[str, int], threads: int) -> Iterator[Line]:
    for name in TRAFFIC_CLASSES:
        if name == OPS:
            continue
        scratch = Bulkheads(limits, threads)
        held = [scratch.enter(name) for _ in range(limits[name])]
        refused = scratch.enter(name) is None
        others = [other for other in TRAFFIC_CLASSES if other not in (name, OPS)]
        admitted = [other for other in others if scratch.enter(other) is not None]
        ops = scratch.enter(OPS) is not None
        ok = all(held) and refused and ops and bool(admitted or not others)
        yield (
            "ok" if ok else "fail",
            f"{name} full ({limits[name]} of {threads} threads): the next is refused at once, "
            f"{', '.join(admitted) or 'no other class'} and ops still admitted",
        )


def _cut_at_budget(alias: str) -> Line:
    token = budget_start(SCRATCH_BUDGET, "ops")
    started = time.monotonic()
    try:
        # In a transaction of its own (a savepoint inside one): the cancel rolls back that and nothing else.
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
    except StatementBudgetError:
        took = time.monotonic() - started
        up = registry().may_connect(alias)
        ok = took < CUT_WITHIN and up
        return (
            "ok" if ok else "fail",
            f"{alias}: a statement past a {SCRATCH_BUDGET:g}s budget cancelled in {took:.2f}s, the node "
            f"{'kept up' if up else 'marked down (it should not be)'}",
        )
    finally:
        budget_end(token)
    return ("fail", f"{alias}: a statement past its budget was not cut (it ran its 5 s)")
