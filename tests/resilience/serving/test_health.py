"""The serving area says whether the traffic classes are isolated and which of them shed load lately."""

from __future__ import annotations

from resilience.serving.bulkheads import worker_bulkheads
from resilience.serving.health import serving_status


def _component(status, measurement: str):
    return next((c for c in status.components if c.name == "bulkheads" and c.measurement == measurement), None)


def test_bulkheads_on_is_isolated():
    isolated = _component(serving_status(), "isolated")
    assert isolated.status == "pass"
    assert isolated.observed_value.startswith("catalog 4, auth 3, checkout 3, admin 2 of 8 threads")


def test_without_bulkheads_the_classes_are_not_isolated(settings):
    settings.SERVING_BULKHEADS = False
    isolated = _component(serving_status(), "isolated")
    assert isolated.status == "fail" and "without bulkheads" in isolated.observed_value


def test_a_class_that_shed_requests_is_named():
    bulkheads = worker_bulkheads()
    held = [bulkheads.enter("auth") for _ in range(bulkheads.classes["auth"].limit)]
    assert bulkheads.enter("auth") is None
    for permit in held:
        permit.release()
    shedding = _component(serving_status(), "shedding")
    assert shedding.status == "warn" and shedding.observed_value == "auth"
    assert _component(serving_status(), "isolated").status == "pass"
