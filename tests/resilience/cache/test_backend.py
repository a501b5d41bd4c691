"""FallbackCache against real Redis servers: the test stack's, one we kill and restart, a hung one, a dead port."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from django.core.cache import caches

from resilience.cache import FallbackCache, cache_state
from resilience.controls.state import RATELIMIT_FORCE_MEMORY, controls_replace
from tests.redis_servers import HungRedis, RedisProcess, dead_redis_url, stack_redis_url

pytestmark = pytest.mark.usefixtures("fresh_circuits")
TIMEOUT = 0.25


@pytest.fixture
def make_cache() -> Callable[..., FallbackCache]:
    def make(location: str, **options: float) -> FallbackCache:
        params = {
            "KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": TIMEOUT, "SOCKET_TIMEOUT": TIMEOUT, **options},
        }
        return FallbackCache(location, params)

    return make


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    yield server
    server.close()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.kill()


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def in_redis(cache: FallbackCache, url: str, key: str) -> bool:
    return bool(raw(url).exists(f"{cache.key_prefix}:1:{key}"))


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "resilience.cache" and getattr(r, "event", None) == name]


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def wait_for(check: Callable[[], bool], timeout: float = 8.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not reached in time"
        time.sleep(0.05)
    return time.monotonic() - started


# ---- Redis up: the whole API is Redis ------------------------------------------------------------------------


def test_the_cache_api_goes_to_redis_while_it_answers(make_cache) -> None:
    url = stack_redis_url()
    cache = make_cache(url)
    assert cache.set("a", {"x": 1}, 60) is not False
    assert cache.get("a") == {"x": 1} and in_redis(cache, url, "a")
    assert cache.add("a", "other") is False and cache.add("b", 5) is True
    assert cache.incr("b") == 6 and cache.decr("b", 2) == 4
    assert cache.has_key("b") and not cache.has_key("nothing")
    assert cache.set_many({"c": 1, "d": 2}) == []
    assert cache.get_many(["c", "d", "e"]) == {"c": 1, "d": 2}
    assert cache.touch("c", 100) is True and 90 < raw(url).ttl(f"{cache.key_prefix}:1:c") <= 100
    assert cache.get_or_set("f", lambda: "computed") == "computed" and in_redis(cache, url, "f")
    assert cache.incr_version("c") == 2 and cache.get("c", version=2) == 1
    assert cache.delete("a") is True and cache.get("a", "gone") == "gone"
    cache.delete_many(["b", "d"])
    assert cache.get_many(["b", "d"]) == {}
    with pytest.raises(ValueError):
        cache.incr("missing")  # Django's contract, and not a Redis failure
    assert cache.snapshot()["backend"] == "redis" and cache.snapshot()["breaker"] == "closed"
    # Nothing of this is in process memory.
    assert cache._memory.get("f") is None


def test_redis_retries_are_off_on_every_connection(make_cache) -> None:
    cache = make_cache(stack_redis_url())
    cache.set("k", 1)
    pool = cache._redis.client.get_client(write=True).connection_pool
    assert pool.connection_kwargs["retry"].get_retries() == 0
    connection = pool.get_connection()
    try:
        assert connection.retry.get_retries() == 0
        assert connection.socket_timeout == TIMEOUT and connection.socket_connect_timeout == TIMEOUT
    finally:
        pool.release(connection)


def test_the_project_cache_is_the_fallback_cache_on_the_stack_redis() -> None:
    cache = caches["default"]
    assert isinstance(cache, FallbackCache)
    assert cache.location == stack_redis_url()
    assert cache.connect_timeout <= 0.25 and cache.socket_timeout <= 0.25
    assert cache_state()["redis_configured"] is True


# ---- Redis failing ---------------------------------------------------------------------------------------------


def test_a_hung_redis_costs_one_timeout_then_memory(make_cache, hung_redis, caplog) -> None:
    cache = make_cache(hung_redis.url, PROBE_INTERVAL=3600)  # no probe connects during the test
    first = timed(lambda: cache.set("a", 1))
    assert TIMEOUT * 0.8 <= first < TIMEOUT + 5, first  # it waited on the hung Redis, and not forever
    assert hung_redis.connections() == 1  # one attempt: a redis-py retry would reconnect
    for _ in range(50):
        cache.incr("a")
    assert hung_redis.connections() == 1  # the circuit is open: no call went to Redis again
    assert cache.get("a") == 51  # answered from memory, consistently
    assert len(events(caplog, "cache_redis_down")) == 1
    state = cache.snapshot()
    assert state["backend"] == "memory" and state["breaker"] == "open" and state["trips"] == 1
    assert "Timeout" in state["last_error"]


def test_a_refused_redis_fails_over_at_once(make_cache, caplog) -> None:
    cache = make_cache(dead_redis_url())
    # No hang: a refused connect pays no timeout (and redis-py's retries are off, see above).
    assert timed(lambda: cache.add("k", 0, 60)) < TIMEOUT + 2
    assert cache.incr("k") == 1 and cache.get("k") == 1
    assert cache.uses_memory()
    assert len(events(caplog, "cache_redis_down")) == 1


def test_concurrent_requests_pay_at_most_one_timeout_each(make_cache, hung_redis) -> None:
    cache = make_cache(hung_redis.url, PROBE_INTERVAL=3600)  # no probe connects during the test
    threads, calls = 8, 25
    durations: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(calls):
            spent = timed(lambda i=i: cache.set(f"k{n}-{i}", i))
            with lock:
                durations.append(spent)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    wall = time.perf_counter() - started
    assert len(durations) == threads * calls
    # Only a call in flight when the circuit opened reached Redis, once (one per thread at most): the process
    # as a whole lost about one timeout, not one per call.
    assert 1 <= hung_redis.connections() <= threads
    assert max(durations) < TIMEOUT + 5 and wall < TIMEOUT + 10, (max(durations), wall)  # and nothing hung


def test_a_probe_returns_to_redis_when_it_answers_again(make_cache, redis_process, caplog) -> None:
    cache = make_cache(redis_process.url, PROBE_INTERVAL=0.2)
    cache.set("before", "redis", 60)
    assert in_redis(cache, redis_process.url, "before")

    redis_process.kill()
    cache.add("counter", 0, 60)  # the failing call is answered from memory
    assert cache.incr("counter") == 1 and cache.snapshot()["backend"] == "memory"
    assert cache.get("before") is None  # memory never had it

    redis_process.start()
    wait_for(lambda: cache.snapshot()["backend"] == "redis")
    assert len(events(caplog, "cache_redis_up")) == 1
    # Counters kept in memory meanwhile are not merged back: the count restarts in Redis.
    assert cache.get("counter") is None
    assert cache.add("counter", 0, 60) is True and cache.incr("counter") == 1
    assert in_redis(cache, redis_process.url, "counter")
    assert cache.snapshot()["trips"] == 1


def test_a_probe_keeps_probing_while_redis_stays_down(make_cache) -> None:
    cache = make_cache(dead_redis_url(), PROBE_INTERVAL=0.1)
    cache.set("k", 1)
    wait_for(lambda: cache.snapshot()["failed_probes"] >= 3)
    assert cache.snapshot()["breaker"] == "open" and cache.get("k") == 1


def test_every_thread_shares_the_process_circuit(make_cache) -> None:
    url = dead_redis_url()
    first, second = make_cache(url), make_cache(url)  # Django builds one cache object per thread
    first.set("k", 1)
    assert second.uses_memory() and second.circuit is first.circuit


# ---- operator switch and memory-only ----------------------------------------------------------------------------


def test_the_operator_switch_forces_memory_with_redis_up(make_cache, caplog) -> None:
    url = stack_redis_url()
    cache = make_cache(url)
    controls_replace([(RATELIMIT_FORCE_MEMORY, True)])
    try:
        cache.set("forced", 1)
        assert not in_redis(cache, url, "forced") and cache.get("forced") == 1
        assert cache.snapshot()["backend"] == "memory" and cache.snapshot()["forced_memory"] is True
        assert len(events(caplog, "cache_forced_memory")) == 1
    finally:
        controls_replace([])
    cache.set("released", 1)
    assert in_redis(cache, url, "released") and cache.snapshot()["backend"] == "redis"
    assert len(events(caplog, "cache_force_released")) == 1


def test_without_a_location_the_cache_is_memory_only(make_cache) -> None:
    cache = make_cache("")
    assert cache.set("k", 1) is not False and cache.incr("k") == 2
    assert cache.uses_memory()
    assert cache.snapshot() == {"backend": "memory", "redis_configured": False, "breaker": None, "forced_memory": False}


def test_clear_empties_memory_too(make_cache) -> None:
    cache = make_cache(dead_redis_url())
    cache.set("k", 1)
    cache.clear()
    assert cache.get("k") is None


# ---- get_direct: the hot path's get ---------------------------------------------------------------------------


def test_get_direct_reads_what_set_stored_as_get_does(make_cache) -> None:
    url = stack_redis_url()
    cache = make_cache(url)
    cache.set("position", 123_456_789_012, 60)  # django-redis stores an integer as such
    cache.set("pickled", {"x": [1, 2]}, 60)  # ... anything else pickled
    assert cache.get_direct("position") == cache.get("position") == 123_456_789_012
    assert cache.get_direct("pickled") == {"x": [1, 2]}
    assert cache.get_direct("missing") is None and cache.get_direct("missing", "default") == "default"
    assert in_redis(cache, url, "position") and cache._memory.get("position") is None


def test_get_direct_fails_over_to_memory_as_get_does(make_cache, hung_redis, caplog) -> None:
    cache = make_cache(hung_redis.url, PROBE_INTERVAL=3600)
    spent = timed(lambda: cache.get_direct("position"))
    assert spent < TIMEOUT + 5  # one timeout, then memory
    assert cache.snapshot()["breaker"] == "open" and len(events(caplog, "cache_redis_down")) == 1
    cache.set("position", 7)  # the circuit is open: memory
    assert cache.get_direct("position") == 7 and hung_redis.connections() == 1


def test_get_direct_obeys_the_operator_switch(make_cache) -> None:
    url = stack_redis_url()
    cache = make_cache(url)
    cache.set("position", 1)
    controls_replace([(RATELIMIT_FORCE_MEMORY, True)])
    try:
        assert cache.get_direct("position") is None  # memory never had it
        cache.set("position", 2)
        assert cache.get_direct("position") == 2
    finally:
        controls_replace([])
    assert cache.get_direct("position") == 1


def test_get_direct_replaces_a_connection_the_server_ended_without_tripping(make_cache, redis_process, caplog) -> None:
    """A Redis restarted between two reads ended this thread's connection: the next read reconnects and answers
    from Redis (no trip, no memory), as the pool's idle check would have."""
    cache = make_cache(redis_process.url, PROBE_INTERVAL=3600)
    cache.set("position", 5, 600)
    assert cache.get_direct("position") == 5
    redis_process.kill()
    redis_process.start()  # empty: it keeps nothing on disk
    cache.set("position", 6, 600)  # through the pool, whose idle check replaced its connection
    assert cache.get_direct("position") == 6 and in_redis(cache, redis_process.url, "position")
    assert cache.snapshot()["breaker"] == "closed" and not events(caplog, "cache_redis_down")
    assert cache._memory.get("position") is None  # never answered from memory
    assert "was gone; sending again on a new one" in caplog.text


def test_get_direct_uses_one_connection_per_thread(make_cache) -> None:
    url = stack_redis_url()
    cache = make_cache(url)
    cache.set("position", 9)
    seen: list[object] = []  # the connections themselves: an id could be reused once a thread's is freed

    def read() -> None:
        for _ in range(50):
            assert cache.get_direct("position") == 9
        seen.append(cache._direct.connection)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(seen) == 4 and len({id(connection) for connection in seen}) == 4  # all four alive here


def test_run_script_loads_its_script_again_when_redis_lost_it(make_cache, redis_process, caplog) -> None:
    """EVALSHA on the thread's own connection; a Redis that forgot its scripts (SCRIPT FLUSH, a restart) gets the
    script loaded again and the same call answers -- no trip."""
    cache = make_cache(redis_process.url, PROBE_INTERVAL=3600)
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert cache.run_script(script, ["n"], [2], purpose="test") == 2
    raw(redis_process.url).script_flush()
    assert cache.run_script(script, ["n"], [3], purpose="test") == 5
    redis_process.kill()
    redis_process.start()  # empty, its scripts gone too, and this thread's connection with them
    assert cache.run_script(script, ["n"], [1], purpose="test") == 1
    assert cache.snapshot()["breaker"] == "closed" and not events(caplog, "cache_redis_down")
    assert in_redis(cache, redis_process.url, "n")


def test_a_direct_connection_made_before_a_trip_is_replaced(make_cache, redis_process) -> None:
    """After the circuit opened and closed again, this thread's connection may lead to a Redis that went away
    (an address that moved): the next direct command opens a new one."""
    cache = make_cache(redis_process.url, PROBE_INTERVAL=0.1)
    cache.set("position", 3, 600)
    assert cache.get_direct("position") == 3
    before = cache._direct.connection._sock
    cache.circuit.trip(redis.ConnectionError("test: a failure elsewhere"), "test")
    wait_for(lambda: not cache.circuit.is_open)
    assert cache.get_direct("position") == 3
    assert cache._direct.connection._sock is not before and cache._direct.trips == cache.circuit.trips
