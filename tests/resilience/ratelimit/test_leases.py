"""The rate limiter's Redis round trips and the global limit's leases, against the test stack's Redis.

Several workers are played in one process by giving each its own :class:`Leases` (what a gunicorn worker holds in
its memory); the counters they lease from are the shared ones in Redis. The stated bound (the module docstring of
``resilience.ratelimit.counting`` and the README): never more than the limit; at most ``workers * (lease - 1)``
fewer, which is at most 5 % of it.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable

import pytest
from django.test import RequestFactory

from resilience.observability.metrics import REDIS_ROUND_TRIPS
from resilience.ratelimit import counting
from resilience.ratelimit.counting import LEASE_SHARE, LEASED_SCOPES, Leases, lease_size
from resilience.ratelimit.policy import SCOPES, count_scopes

pytestmark = pytest.mark.usefixtures("fresh_circuits")

DAY = 86400
SECURITY_SCOPES = {"login", "login_user", "admin_login", "admin_login_user", "otp", "register", "refresh", "checkout"}


@pytest.fixture
def limits(settings) -> Callable[..., None]:
    def apply(workers: int = 2, **rates: tuple[int, int]) -> None:
        settings.RATELIMIT_ENABLE = True
        settings.RATELIMIT_RATES = dict(rates)
        settings.RATELIMIT_WORKERS = workers
        settings.RATELIMIT_TRUSTED_PROXY_COUNT = 0

    return apply


def a_request():
    """A request from an address no other test uses (the counters live in Redis for the whole run)."""
    return RequestFactory().get("/api/products/", REMOTE_ADDR=f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.9")


def round_trips(purpose: str = "rate_limits") -> float:
    return REDIS_ROUND_TRIPS.labels(purpose=purpose)._value.get()


def test_only_the_global_limit_is_leased_never_a_security_scope() -> None:
    assert set(SCOPES) == SECURITY_SCOPES | {"api"}
    assert LEASED_SCOPES == {"api"}


@pytest.mark.parametrize(
    ("limit", "workers", "size"),
    [(3, 2, 1), (10, 2, 1), (300, 2, 7), (300, 4, 3), (1_000_000, 2, 100), (40, 2, 1), (41, 1, 2)],
)
def test_a_lease_keeps_every_worker_s_leftovers_under_five_percent(limit, workers, size) -> None:
    assert lease_size(limit, workers) == size
    assert workers * (size - 1) <= max(0, int(limit * LEASE_SHARE))


def test_a_request_with_three_exact_scopes_is_one_round_trip(limits) -> None:
    limits(api=(1000, DAY), login=(10, DAY), login_user=(10, DAY))
    request = a_request()
    before = round_trips()
    usages = count_scopes(request, ["api", "login", "login_user"], {"login_user": f"username:{uuid.uuid4().hex}"})
    assert round_trips() - before == 1
    assert [usages[scope].count for scope in ("api", "login", "login_user")] == [1, 1, 1]
    assert usages["login"].remaining == 9


def test_the_first_scope_over_its_limit_stops_the_count(limits) -> None:
    limits(login=(2, DAY), login_user=(50, DAY))
    request, user = a_request(), f"username:{uuid.uuid4().hex}"
    for _ in range(2):
        count_scopes(request, ["login", "login_user"], {"login_user": user})
    usages = count_scopes(request, ["login", "login_user"], {"login_user": user})
    assert usages["login"].exceeded and "login_user" not in usages  # as django-ratelimit: no further scope counted
    assert count_scopes(a_request(), ["login_user"], {"login_user": user})["login_user"].count == 3


def test_a_leased_scope_goes_to_redis_once_per_lease(limits) -> None:
    limits(api=(100_000, DAY))  # lease 100 for 2 workers
    request = a_request()
    before = round_trips()
    counts = [count_scopes(request, ["api"])["api"].count for _ in range(250)]
    assert counts == list(range(1, 251))  # one worker alone: its own count, in order
    assert round_trips() - before == 3  # leases at the 1st, 101st and 201st request


def simulate(limit: int, workers: int, requests: int, rng: random.Random, monkeypatch) -> tuple[list[int], int]:
    """One client's ``requests`` spread at random over ``workers`` workers (each its own leases) sharing Redis's
    counter: which worker each allowed request went to, and how many were allowed before the first refusal."""
    held = [Leases() for _ in range(workers)]
    request = a_request()
    allowed: list[int] = []
    first_refusal_after = None
    for _ in range(requests):
        worker = rng.randrange(workers)
        monkeypatch.setattr(counting, "leases", held[worker])
        usage = count_scopes(request, ["api"])["api"]
        if usage.exceeded:
            first_refusal_after = len(allowed) if first_refusal_after is None else first_refusal_after
        else:
            allowed.append(worker)
    return allowed, first_refusal_after if first_refusal_after is not None else len(allowed)


@pytest.mark.parametrize(("limit", "workers"), [(300, 2), (400, 2), (600, 3), (2000, 2)])
def test_across_workers_the_limit_is_never_exceeded_and_at_most_the_stated_error_is_lost(
    limits, monkeypatch, limit, workers
) -> None:
    limits(workers=workers, api=(limit, DAY))
    size = lease_size(limit, workers)
    assert size > 1
    rng = random.Random(limit * 31 + workers)
    for _client in range(5):
        allowed, before_refusal = simulate(limit, workers, limit + 3 * workers * size, rng, monkeypatch)
        assert len(allowed) <= limit
        assert before_refusal >= limit - (workers - 1) * (size - 1)
        assert len(allowed) >= limit - workers * (size - 1)
        assert limit - len(allowed) <= limit * LEASE_SHARE


def test_threads_of_several_workers_at_once_never_exceed_the_limit(limits, monkeypatch) -> None:
    limit, workers, threads = 500, 2, 4
    limits(workers=workers, api=(limit, DAY))
    size = lease_size(limit, workers)
    held = [Leases() for _ in range(workers)]
    local = threading.local()

    class PerThreadWorker:
        """Each thread is one worker's thread: it uses that worker's leases."""

        def __getattr__(self, name: str):
            return getattr(held[local.worker], name)

    monkeypatch.setattr(counting, "leases", PerThreadWorker())
    request = a_request()
    allowed = []
    start = threading.Barrier(workers * threads)

    def client(worker: int) -> None:
        local.worker = worker
        start.wait()
        for _ in range(2 * limit // (workers * threads)):
            usage = count_scopes(request, ["api"])["api"]
            if not usage.exceeded:
                allowed.append(usage.count)

    pool = [threading.Thread(target=client, args=(w,)) for w in range(workers) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert limit - workers * (size - 1) <= len(allowed) <= limit


def test_with_redis_down_a_leased_scope_counts_in_memory_at_the_worker_share(limits, settings) -> None:
    from tests.redis_servers import dead_redis_cache

    settings.CACHES = {**settings.CACHES, "ratelimit-dead": dead_redis_cache()}
    settings.RATELIMIT_USE_CACHE = "ratelimit-dead"
    limits(api=(100_000, DAY))
    request = a_request()
    usages = [count_scopes(request, ["api"])["api"] for _ in range(3)]
    assert [usage.count for usage in usages] == [1, 2, 3]
    assert {usage.limit for usage in usages} == {50_000}  # the worker share, counted in this process


def test_a_worker_keeps_a_bounded_number_of_leases(monkeypatch) -> None:
    monkeypatch.setattr(counting, "_MAX_LEASES", 100)
    held = Leases()
    window_end, now = 2**31, 2**31 - 10
    for n in range(1000):
        held.store(("api", f"ip:{n}", 300, 60), window_end, stock=5, next_count=2)
    assert len(held._leases) <= 100
    assert held.take(("api", "ip:999", 300, 60), now) == (2, window_end)  # the newest are kept
    assert held.take(("api", "ip:0", 300, 60), now) is None


def test_a_lease_serves_only_in_the_window_it_was_taken_in() -> None:
    held = Leases()
    held.store(("api", "ip:1", 300, 60), 1_000, stock=3, next_count=8)
    assert held.take(("api", "ip:1", 300, 60), 940) is None  # the window is 941-1000
    assert held.take(("api", "ip:1", 300, 60), 1_001) is None  # a new window: its count starts again in Redis
    assert [held.take(("api", "ip:1", 300, 60), now) for now in (941, 970, 1_000, 1_000)] == [
        (8, 1_000),
        (9, 1_000),
        (10, 1_000),
        None,
    ]


def test_a_changed_rate_counts_on_its_own_counter_not_from_the_old_rate_s_lease(limits) -> None:
    limits(api=(100_000, DAY))
    request = a_request()
    assert [count_scopes(request, ["api"])["api"].count for _ in range(3)] == [1, 2, 3]  # from one lease of 100
    limits(api=(200_000, DAY))
    usage = count_scopes(request, ["api"])["api"]
    assert (usage.count, usage.limit) == (1, 200_000)  # a new counter, as django-ratelimit's key names the rate
