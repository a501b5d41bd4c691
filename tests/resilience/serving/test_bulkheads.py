"""Bulkheads: a limit per class, the shared reserve that keeps a thread for ops, and what they report."""

from __future__ import annotations

import threading

import pytest

from resilience.serving.bulkheads import Bulkheads

LIMITS = {"catalog": 2, "auth": 2, "checkout": 2, "admin": 1, "ops": 2}


def test_a_class_is_refused_over_its_limit_and_admitted_again_after_a_release():
    bulkheads = Bulkheads(LIMITS, threads=8)
    first, second = bulkheads.enter("catalog"), bulkheads.enter("catalog")
    assert first and second
    assert bulkheads.enter("catalog") is None
    assert bulkheads.enter("auth") is not None  # another class is not affected
    first.release()
    first.release()  # twice is once
    assert bulkheads.classes["catalog"].in_flight == 1
    assert bulkheads.enter("catalog") is not None
    state = bulkheads.snapshot()["classes"]["catalog"]
    assert (state["in_flight"], state["shed"], state["admitted"], state["peak"]) == (2, 1, 3, 2)
    assert state["shed_recently"] is True


def test_the_non_ops_classes_together_leave_one_thread_for_ops():
    bulkheads = Bulkheads({"catalog": 3, "auth": 3, "checkout": 3, "admin": 3, "ops": 4}, threads=4)
    held = [bulkheads.enter("catalog"), bulkheads.enter("auth"), bulkheads.enter("checkout")]
    assert all(held)
    assert bulkheads.enter("admin") is None  # its own limit has room, the reserve has not
    assert bulkheads.classes["admin"].shed_reserve == 1
    assert bulkheads.enter("ops") is not None
    held[0].release()
    assert bulkheads.enter("admin") is not None


def test_ops_has_its_own_limit_too():
    bulkheads = Bulkheads(LIMITS, threads=8)
    assert bulkheads.enter("ops") and bulkheads.enter("ops")
    assert bulkheads.enter("ops") is None


def test_disabled_bulkheads_count_but_never_refuse():
    bulkheads = Bulkheads(LIMITS, threads=8, enabled=False)
    permits = [bulkheads.enter("catalog") for _ in range(10)]
    assert all(permits)
    assert bulkheads.snapshot()["classes"]["catalog"]["peak"] == 10


@pytest.mark.timeout(30)
def test_concurrent_requests_never_exceed_the_limit():
    bulkheads = Bulkheads(LIMITS, threads=8)
    seen: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def request() -> None:
        start.wait()
        for _ in range(200):
            permit = bulkheads.enter("catalog")
            if permit is None:
                continue
            with lock:
                seen.append(bulkheads.classes["catalog"].in_flight)
            permit.release()

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = bulkheads.snapshot()["classes"]["catalog"]
    assert max(seen) <= 2 and snapshot["peak"] <= 2
    assert snapshot["in_flight"] == 0 and bulkheads.shared_in_flight == 0
    assert snapshot["admitted"] + snapshot["shed"] == 16 * 200
