"""Each test gets this worker's bulkheads fresh: a shed request would otherwise show as "shedding" for a minute
in the serving health area of the tests that follow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience.serving.bulkheads import worker_bulkheads_reset


@pytest.fixture(autouse=True)
def fresh_bulkheads() -> Iterator[None]:
    worker_bulkheads_reset()
    yield
    worker_bulkheads_reset()
