"""Worker snapshots for the dashboard, against real Redis servers: the test stack's, one we kill and restart, a
hung one, a dead port. Other workers are fake snapshots published under their own ids, or a real second process.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.cache import caches

from resilience.breakers.registry import breaker_get
from resilience.cache import cache_state
from resilience.controls.state import PRIMARY_ONLY_READS, RATELIMIT_FORCE_MEMORY, controls_replace, switches
from resilience.db import monitor as monitor_module
from resilience.db.nodes import registry
from resilience.health import workers
from resilience.health.workers import (
    SNAPSHOT_TTL_SECONDS,
    _publish,
    publisher_start,
    publisher_stop,
    worker_id,
    worker_snapshot,
    workers_live,
)
from tests.helpers import poll
from tests.redis_servers import HungRedis, RedisProcess, dead_redis_cache, stack_redis_url

pytestmark = pytest.mark.usefixtures("fresh_circuits")
ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 0.25
REPLICA = "replica_1"


def cache_entry(url: str, **options: float) -> dict[str, Any]:
    """A ``CACHES`` entry at ``url`` with a key prefix of its own: no other test's (or run's) workers."""
    return {
        "BACKEND": "resilience.cache.FallbackCache",
        "LOCATION": url,
        "KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": TIMEOUT, "SOCKET_TIMEOUT": TIMEOUT, **options},
    }


@pytest.fixture
def stack_cache(settings) -> dict[str, Any]:
    entry = cache_entry(stack_redis_url())
    settings.CACHES = {**settings.CACHES, "default": entry}
    return entry


@pytest.fixture
def publisher(settings, fresh_circuits) -> Iterator[None]:
    """The publisher may start (it runs where the monitor is enabled); stopped before settings are restored."""
    publisher_stop()
    settings.BULWARK_DB_MONITOR = True
    yield
    publisher_stop()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    yield server
    server.close()


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def key(name: str) -> str:
    return caches["default"].make_key(name)


def published(url: str, wid: str) -> dict[str, Any] | None:
    value = raw(url).get(key(f"worker:{wid}"))
    return json.loads(value) if value is not None else None


def fake(wid: str, published_at: float | None = None, **extra: Any) -> dict[str, Any]:
    """Another worker's snapshot (only what the transport needs, and a marker)."""
    published_at = time.time() if published_at is None else published_at
    return {"id": wid, "host": wid.rpartition(":")[0], "published_at": published_at, "marker": wid, **extra}


def ids(fleet: workers.Fleet) -> list[str]:
    return [worker["id"] for worker in fleet.workers]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "resilience.health" and getattr(r, "event", None) == name]


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# ---- this process ----------------------------------------------------------------------------------------------


def test_worker_id_is_host_and_pid_and_a_forked_worker_gets_its_own(publisher, stack_cache) -> None:
    assert worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    assert worker_id() is worker_id()  # computed once per process
    publisher_start()  # a running publisher in the parent: the child must not believe it has one
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (a gunicorn worker): report, and leave without running anything else of pytest
        try:
            report = {"id": worker_id(), "pid": os.getpid(), "thread": workers._thread is not None}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child == {"id": f"{socket.gethostname()}:{pid}", "pid": pid, "thread": False}
    assert worker_id() == f"{socket.gethostname()}:{os.getpid()}"  # the parent's is unchanged


def test_the_snapshot_is_json_and_holds_this_process_view(stack_cache) -> None:
    # No database fixture: pytest-django refuses any query, so this also shows a snapshot needs no database.
    nodes = registry()
    nodes.mark_down(REPLICA, "connection refused (test)", tell_fleet=False)
    nodes.probing = True
    breaker_get("payment_gateway")
    started = time.time()
    snapshot = worker_snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot  # plain JSON: no default= needed, nothing lost
    assert snapshot["id"] == worker_id() and snapshot["pid"] == os.getpid()
    assert snapshot["host"] == socket.gethostname()
    assert snapshot["started_at"] <= started <= snapshot["published_at"] <= time.time()
    assert snapshot["nodes"] == nodes.snapshot()
    assert snapshot["nodes"][REPLICA]["reachable"] is False
    assert "connection refused (test)" in snapshot["nodes"][REPLICA]["last_error"]
    gateway = snapshot["breakers"]["payment_gateway"]
    assert gateway["shared"] is True and gateway["scope"] == "fleet"
    assert snapshot["cache"] == cache_state() and snapshot["cache"]["backend"] == "redis"
    assert snapshot["controls"] == switches() == {PRIMARY_ONLY_READS: True}
    assert snapshot["monitor"] is True
    nodes.probing = False
    assert worker_snapshot()["monitor"] is False


# ---- the fleet in Redis ------------------------------------------------------------------------------------------


def test_two_publishers_are_both_live_and_this_worker_is_computed_now(stack_cache) -> None:
    assert _publish(fake("host-b:2")) == "published"
    assert _publish(fake("host-a:1")) == "published"
    assert _publish(fake(worker_id(), marker="read back")) == "published"  # this worker's last publish
    before = time.time()
    fleet = workers_live()
    assert fleet.shared is True and fleet.note == ""
    assert ids(fleet) == sorted(["host-a:1", "host-b:2", worker_id()])
    by_id = {worker["id"]: worker for worker in fleet.workers}
    assert by_id["host-a:1"]["marker"] == "host-a:1" and by_id["host-b:2"]["marker"] == "host-b:2"
    own = by_id[worker_id()]
    assert "marker" not in own and own["published_at"] >= before  # fresh, not the copy in Redis
    assert own["nodes"] == registry().snapshot()


def test_a_worker_in_another_process_is_live(stack_cache) -> None:
    code = (
        "from django.conf import settings\n"
        f"settings.CACHES['default'].update(LOCATION={stack_cache['LOCATION']!r}, "
        f"KEY_PREFIX={stack_cache['KEY_PREFIX']!r})\n"
        "from resilience.health.workers import _publish, worker_id, worker_snapshot\n"
        "print(_publish(worker_snapshot()), worker_id())\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome, other = result.stdout.split()[-2:]
    assert outcome == "published", (result.stdout[-2000:], result.stderr[-2000:])
    assert other != worker_id() and other.startswith(f"{socket.gethostname()}:")
    fleet = workers_live(max_age=SNAPSHOT_TTL_SECONDS)  # the child's Django start-up is not counted against it
    assert fleet.shared is True
    assert ids(fleet) == sorted([worker_id(), other])
    child = next(worker for worker in fleet.workers if worker["id"] == other)
    assert child["pid"] == int(other.rpartition(":")[2]) and child["nodes"].keys() == registry().snapshot().keys()


def test_a_worker_that_stopped_publishing_disappears_after_max_age(stack_cache) -> None:
    assert _publish(fake("late:1", published_at=time.time() - 5)) == "published"
    assert "late:1" not in ids(workers_live(max_age=3))
    assert "late:1" in ids(workers_live(max_age=9))  # still in Redis: only too old for max_age=3
    assert _publish(fake("stopped:1")) == "published"
    started = time.monotonic()
    assert "stopped:1" in ids(workers_live(max_age=1))
    poll(lambda: "stopped:1" not in ids(workers_live(max_age=1)), timeout=10, interval=0.05)
    assert time.monotonic() - started >= 0.8  # it went because it grew old, not at once


def test_a_publish_is_one_round_trip_with_an_expiring_key_and_pruned_members(stack_cache, monkeypatch) -> None:
    url = stack_cache["LOCATION"]
    index = key("workers")
    raw(url).zadd(index, {"long-gone:1": time.time() - 60})
    assert _publish(fake("warm:1")) == "published"  # the pool's first connection (its handshake) made here
    sends: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # the real send, counted
        sends.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    snapshot = worker_snapshot()
    assert _publish(snapshot) == "published"
    monkeypatch.undo()
    assert len(sends) == 1, sends  # one round trip: SET, ZADD, ZREMRANGEBYSCORE and EXPIRE in one pipeline
    client = raw(url)
    assert published(url, worker_id()) == snapshot
    assert 0 < client.ttl(key(f"worker:{worker_id()}")) <= SNAPSHOT_TTL_SECONDS
    assert 0 < client.ttl(index) <= workers.INDEX_TTL_SECONDS
    assert client.zscore(index, worker_id()) == pytest.approx(snapshot["published_at"])
    assert client.zscore(index, "long-gone:1") is None  # pruned by the publish
    assert index == f"{stack_cache['KEY_PREFIX']}:1:workers"  # the cache's prefix and version apply


# ---- Redis down, or not to be used ---------------------------------------------------------------------------------


def test_with_redis_down_the_dashboard_shows_only_this_worker(settings) -> None:
    settings.CACHES = {**settings.CACHES, "default": dead_redis_cache()}
    breaker_get("payment_gateway")
    fleet = workers_live()
    assert fleet.shared is False
    assert ids(fleet) == [worker_id()]
    assert "Redis is down" in fleet.note and "only show the worker that served this page" in fleet.note
    assert worker_id() in fleet.note
    # The failure went to the cache's circuit: the whole process is in memory now, breakers per worker.
    assert cache_state()["breaker"] == "open" and cache_state()["backend"] == "memory"
    assert fleet.workers[0]["breakers"]["payment_gateway"]["scope"] == "worker"
    assert _publish(fake("other:1")) == "redis_down"
    again = workers_live()
    assert again.shared is False and ids(again) == [worker_id()] and again.note == fleet.note


def test_a_hung_redis_costs_one_timeout_and_then_is_not_tried(settings, hung_redis) -> None:
    settings.CACHES = {**settings.CACHES, "default": cache_entry(hung_redis.url, PROBE_INTERVAL=3600)}
    first = timed(workers_live)
    assert TIMEOUT * 0.8 <= first < TIMEOUT + 5, first
    assert hung_redis.connections() == 1
    for _ in range(5):
        assert workers_live().shared is False
        assert _publish(worker_snapshot()) == "redis_down"
    assert hung_redis.connections() == 1  # the circuit is open: no call went to Redis again


def test_the_operators_memory_switch_shows_only_this_worker(stack_cache) -> None:
    assert _publish(fake("other:1")) == "published"
    controls_replace([(PRIMARY_ONLY_READS, True), (RATELIMIT_FORCE_MEMORY, True)])
    fleet = workers_live()
    assert fleet.shared is False and ids(fleet) == [worker_id()]
    assert "ratelimit.force_memory" in fleet.note and "only show the worker that served this page" in fleet.note
    assert _publish(fake("other:1", marker="while forced")) == "forced"
    controls_replace([(PRIMARY_ONLY_READS, True)])
    fleet = workers_live()
    assert fleet.shared is True and ids(fleet) == sorted(["other:1", worker_id()])
    assert next(w for w in fleet.workers if w["id"] == "other:1")["marker"] == "other:1"  # nothing written forced


# ---- the publisher thread --------------------------------------------------------------------------------------------


def test_the_publisher_publishes_every_second_and_survives_a_redis_kill(
    publisher, settings, redis_process, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="resilience.health")
    settings.CACHES = {**settings.CACHES, "default": cache_entry(redis_process.url, PROBE_INTERVAL=0.2)}
    url, wid = redis_process.url, worker_id()
    seen: list[float] = []

    def publishes(count: int) -> Callable[[], bool]:
        def check() -> bool:
            snapshot = published(url, wid)
            if snapshot is not None and (not seen or snapshot["published_at"] != seen[-1]):
                seen.append(snapshot["published_at"])
            return len(seen) >= count

        return check

    publisher_start()
    poll(publishes(4), timeout=15, interval=0.05)
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert all(0.8 <= gap <= 1.5 for gap in gaps), gaps  # every second
    thread = workers._thread
    publisher_start()
    assert workers._thread is thread  # once per process

    redis_process.kill()
    poll(lambda: cache_state()["breaker"] == "open", timeout=10, interval=0.05)  # the publisher told the circuit
    time.sleep(2.5)  # a few turns with Redis gone
    assert thread.is_alive()
    assert workers_live().shared is False

    redis_process.start()  # same port, empty: only a new publish puts the key back
    assert published(url, wid) is None
    seen.clear()
    poll(publishes(2), timeout=15, interval=0.05)
    assert thread.is_alive() and workers_live().shared is True
    assert [worker["id"] for worker in workers_live().workers] == [wid]
    assert len(events(caplog, "workers_publish_started")) == 1
    paused = events(caplog, "workers_publish_paused")
    assert len(paused) == 1 and paused[0].reason == "redis_down"  # once, not every second
    assert len(events(caplog, "workers_publish_resumed")) == 1


def test_the_publisher_never_slows_a_request_and_pays_one_timeout_on_a_hung_redis(
    publisher, settings, hung_redis
) -> None:
    settings.CACHES = {**settings.CACHES, "default": cache_entry(hung_redis.url, PROBE_INTERVAL=3600)}
    assert timed(publisher_start) < 0.1  # the request returns at once: the first publish is the thread's
    poll(lambda: cache_state()["breaker"] == "open", timeout=10, interval=0.05)
    time.sleep(2.5)  # two more turns
    assert hung_redis.connections() == 1  # circuit open: the thread checks it and does not call Redis
    assert workers._thread is not None and workers._thread.is_alive()


def test_the_first_request_starts_the_publisher_where_the_monitor_is_enabled(
    publisher, settings, stack_cache, client, monkeypatch
) -> None:
    monkeypatch.setattr(monitor_module, "_monitor", object())  # no real monitor threads in this process
    settings.BULWARK_DB_MONITOR = False  # the unit-test setting: neither starts
    assert client.get("/health/live").status_code == 200
    assert workers._thread is None
    settings.BULWARK_DB_MONITOR = True
    assert client.get("/health/live").status_code == 200
    thread = workers._thread
    assert thread is not None and thread.is_alive()
    poll(lambda: published(stack_cache["LOCATION"], worker_id()), timeout=10, interval=0.05)
    assert client.get("/health/live").status_code == 200
    assert workers._thread is thread
