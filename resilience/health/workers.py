"""Every gunicorn worker's view of the nodes and dependencies, side by side: each publishes a snapshot of its own.

Node health (each worker probes every node itself), breaker state whenever it cannot be shared, the cache's
circuit and the operator switches are per process, so the admin dashboard needs each worker's view, not the
view of whichever worker serves the page. :func:`publisher_start` (called by
:class:`resilience.db.middleware.DatabaseRoutingMiddleware` on a worker's first request, where the database
monitor starts, and only where that monitor is enabled: ``BULWARK_DB_MONITOR``) runs one daemon thread per
process that publishes :func:`worker_snapshot` every second; :func:`workers_live` reads every fresh one back.

In Redis (the default cache's, through django-redis; keys made by the cache's ``make_key``, so ``KEY_PREFIX``,
``VERSION`` and ``KEY_FUNCTION`` apply, e.g. ``bulwark:1:workers``):

- ``workers``: a sorted set, member = worker id (``host:pid``), score = publish time (wall clock);
- ``worker:<id>``: that worker's snapshot as JSON, expiring after :data:`SNAPSHOT_TTL_SECONDS`.

Cost: building a snapshot reads only this process's memory (no database, no Redis). Publishing is one round
trip per second per worker (one pipeline: ``SET`` with expiry, ``ZADD``, ``ZREMRANGEBYSCORE`` pruning members
older than the TTL, ``EXPIRE`` of the set), a few kilobytes. Reading the fleet is two round trips
(``ZRANGEBYSCORE``, ``MGET``) per page view. Freshness compares publish times from each worker's clock with
the reader's: hosts are assumed NTP-synchronised (a skew of a second or two against the 3 s default is fine).

When Redis fails: every call here goes through the default cache's circuit (:mod:`resilience.cache.circuit`).
A failed call trips it, as any failed cache call does, so the whole process serves the cache from memory; while
it is open (or the operator switch ``ratelimit.force_memory`` is on) nothing here touches Redis: the publisher
skips its turn at no cost and :func:`workers_live` returns only this worker, ``shared=False``, with a note that
the dashboard can only show the worker that served the page. The cache's own probe finds Redis back; the next
publish goes out within a second. The publisher never touches the database, never raises out of its thread,
and logs once per change of state (published, paused and why), not every second.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from resilience.breakers.registry import breakers_snapshot
from resilience.cache import FallbackCache, cache_state
from resilience.cache.circuit import REDIS_FAILURES
from resilience.cache.purposes import WORKER_SNAPSHOTS
from resilience.controls.state import ratelimit_force_memory, switches
from resilience.db.nodes import registry
from resilience.observability.metrics import redis_round_trip
from resilience.serving.bulkheads import worker_bulkheads

logger = logging.getLogger("resilience.health")

CACHE_ALIAS = "default"
PUBLISH_INTERVAL_SECONDS = 1.0
SNAPSHOT_TTL_SECONDS = 10  # a worker's key outlives a few missed publishes; workers_live sees no further back
INDEX_TTL_SECONDS = 60  # the sorted set goes when the whole fleet has stopped
DEFAULT_MAX_AGE_SECONDS = 3.0
INDEX_KEY = "workers"
SNAPSHOT_KEY = "worker:{id}"

# Why only this worker is shown (and why the publisher pauses), by reason.
_NOTES = {
    "redis_down": "Redis is down: the dashboard can only show the worker that served this page ({id}).",
    "forced": (
        "The operator switch ratelimit.force_memory keeps the cache in process memory, as when Redis is down: "
        "the dashboard can only show the worker that served this page ({id})."
    ),
    "no_redis": "No Redis is configured: the dashboard can only show the worker that served this page ({id}).",
    "not_fallback": (
        "The default cache is not Bulwark's fallback cache on Redis: the dashboard can only show the worker that "
        "served this page ({id})."
    ),
}


@dataclass(frozen=True)
class Fleet:
    """The live workers as the dashboard shows them; ``shared=False``: only this one, ``note`` says why."""

    shared: bool
    workers: list[dict[str, Any]]
    note: str


# ---- this process --------------------------------------------------------------------------------------------

_identity: tuple[int, str] | None = None  # (pid, id): recomputed when the pid changes (a forked worker)
_started_at = time.time()


def worker_id() -> str:
    """``"<hostname>:<pid>"``, stable for this process."""
    global _identity
    pid = os.getpid()
    identity = _identity
    if identity is None or identity[0] != pid:
        identity = _identity = (pid, f"{socket.gethostname()}:{pid}")
    return identity[1]


def worker_snapshot() -> dict[str, Any]:
    """This process's view, JSON-serialisable; reads memory only (no database, no Redis)."""
    nodes = registry()
    breakers = {
        # ``shared``: the breaker counts and opens with the fleet (Redis answers) or on its own (memory).
        name: {**snap, "scope": "fleet" if snap.get("shared") else "worker"}
        for name, snap in breakers_snapshot().items()
    }
    wid = worker_id()
    return {
        "id": wid,
        "host": wid.rpartition(":")[0],
        "pid": os.getpid(),
        "started_at": _started_at,
        "published_at": time.time(),
        "nodes": nodes.snapshot(),
        "breakers": breakers,
        "cache": cache_state(CACHE_ALIAS),
        "controls": switches(),
        "monitor": nodes.probing,
        "serving": worker_bulkheads().snapshot(),
        "pool": settings.BULWARK_CONFIG.serving.pool,
    }


# ---- Redis, through the default cache's circuit ------------------------------------------------------------------


def _redis_for(cache: BaseCache, *, write: bool) -> tuple[redis.Redis | None, str]:
    """The raw client behind the fallback cache when it would go to Redis now; else (None, why not)."""
    if not isinstance(cache, FallbackCache):
        return None, "not_fallback"
    if cache._redis is None:  # the wrapped django-redis RedisCache; None = memory only
        return None, "no_redis"
    if cache.uses_memory():  # circuit open (no timeout paid) or the operator's switch
        return None, "forced" if ratelimit_force_memory() else "redis_down"
    return cache._redis.client.get_client(write=write), ""


def _trip(cache: BaseCache, exc: BaseException, operation: str) -> None:
    """Tell the circuit, as ``FallbackCache._call`` does: the whole process falls back to memory, consistently."""
    if isinstance(cache, FallbackCache) and cache.circuit is not None:
        cache.circuit.trip(exc, operation)


def _publish(snapshot: dict[str, Any]) -> str:
    """Write one snapshot (its ``id`` and ``published_at``) in one round trip; "published" or why not."""
    cache = caches[CACHE_ALIAS]
    client, reason = _redis_for(cache, write=True)
    if client is None:
        return reason
    published_at = float(snapshot["published_at"])
    index = cache.make_key(INDEX_KEY)
    pipe = client.pipeline(transaction=False)
    pipe.set(cache.make_key(SNAPSHOT_KEY.format(id=snapshot["id"])), json.dumps(snapshot), ex=SNAPSHOT_TTL_SECONDS)
    pipe.zadd(index, {snapshot["id"]: published_at})
    pipe.zremrangebyscore(index, "-inf", f"({time.time() - SNAPSHOT_TTL_SECONDS}")  # their keys have expired
    pipe.expire(index, INDEX_TTL_SECONDS)
    redis_round_trip(WORKER_SNAPSHOTS)
    try:
        pipe.execute()
    except REDIS_FAILURES as exc:
        _trip(cache, exc, "workers_publish")
        return "redis_down"
    return "published"


def workers_live(*, max_age: float = DEFAULT_MAX_AGE_SECONDS) -> Fleet:
    """Every worker that published within ``max_age`` seconds (at most the TTL), sorted by id; this one always,
    computed now. With the cache in memory (Redis down, or forced): this worker only, ``shared=False``."""
    # This worker's own view is taken after the Redis calls, so it shows what they found (a failed read has
    # just put the cache, and so the breakers, in memory).
    cache = caches[CACHE_ALIAS]
    client, reason = _redis_for(cache, write=False)
    if client is None:
        return _only_this_worker(reason)
    wid = worker_id()
    try:
        redis_round_trip(WORKER_SNAPSHOTS)
        members = client.zrangebyscore(cache.make_key(INDEX_KEY), time.time() - max_age, "+inf")
        others = [member for member in (raw.decode() for raw in members) if member != wid]
        if others:
            redis_round_trip(WORKER_SNAPSHOTS)
        values = client.mget([cache.make_key(SNAPSHOT_KEY.format(id=other)) for other in others]) if others else []
    except REDIS_FAILURES as exc:
        _trip(cache, exc, "workers_live")
        return _only_this_worker("redis_down")
    workers = [worker_snapshot()]
    for other, value in zip(others, values, strict=True):
        if value is None:
            continue  # listed, but its key expired between the two reads (or max_age is beyond the TTL)
        try:
            snapshot = json.loads(value)
        except ValueError:
            logger.warning("worker %s published a snapshot that is not JSON: left out", other)
            continue
        if isinstance(snapshot, dict):
            workers.append(snapshot)
    workers.sort(key=lambda worker: str(worker.get("id", "")))
    return Fleet(shared=True, workers=workers, note="")


def _only_this_worker(reason: str) -> Fleet:
    own = worker_snapshot()
    return Fleet(shared=False, workers=[own], note=_NOTES[reason].format(id=own["id"]))


# ---- the publisher thread ------------------------------------------------------------------------------------------

_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid: int | None = None
_stop = threading.Event()


def publisher_start() -> None:
    """Start this process's publisher thread once (where the database monitor is enabled); cheap on every call."""
    global _thread, _thread_pid, _stop
    if _thread is not None and _thread_pid == os.getpid():  # the request path: no lock once started
        return
    if not settings.BULWARK_DB_MONITOR:  # tests and single-process benchmarks: neither monitor nor publisher
        return
    with _lock:
        if _thread is not None and _thread_pid == os.getpid() and _thread.is_alive():
            return
        _stop = threading.Event()
        _thread = threading.Thread(target=_publish_loop, args=(_stop,), name="workers-publisher", daemon=True)
        _thread_pid = os.getpid()
        _thread.start()


def publisher_stop(timeout: float = 5.0) -> None:
    """Stop this process's publisher thread and wait for it (tests)."""
    global _thread, _thread_pid
    with _lock:
        thread, stop = _thread, _stop
        _thread, _thread_pid = None, None
    stop.set()
    if thread is not None and thread.is_alive():
        thread.join(timeout)


def _publish_loop(stop: threading.Event) -> None:
    last = ""
    while True:
        started = time.monotonic()
        try:
            outcome = _publish(worker_snapshot())
        except Exception as exc:  # a bug must not end the thread: this worker would vanish from the dashboard
            outcome = f"error: {type(exc).__name__}: {exc}"
            if outcome != last:
                logger.exception("workers_publish_error: worker %s could not publish its snapshot", worker_id())
        else:
            _log_change(last, outcome)
        last = outcome
        if stop.wait(max(0.0, PUBLISH_INTERVAL_SECONDS - (time.monotonic() - started))):
            return


def _log_change(last: str, outcome: str) -> None:
    """Once per change of state, never every second."""
    if outcome == last:
        return
    if outcome == "published":
        logger.info(
            "workers_publish_%s: worker %s publishes its snapshot every %.0f s",
            "resumed" if last else "started",
            worker_id(),
            PUBLISH_INTERVAL_SECONDS,
            extra={"event": "workers_publish_resumed" if last else "workers_publish_started", "worker": worker_id()},
        )
        return
    logger.info(
        "workers_publish_paused: worker %s does not publish its snapshot (%s); the dashboard shows it only when "
        "it serves the page",
        worker_id(),
        outcome,
        extra={"event": "workers_publish_paused", "worker": worker_id(), "reason": outcome},
    )


def _after_fork_in_child() -> None:
    """A forked worker: threads do not survive fork, and it is a new worker (new pid, new start)."""
    global _identity, _started_at, _thread, _thread_pid, _lock, _stop
    _identity = None
    _started_at = time.time()
    _thread, _thread_pid = None, None
    _lock = threading.Lock()  # it may have been held by another thread of the parent at the fork
    _stop = threading.Event()


os.register_at_fork(after_in_child=_after_fork_in_child)
