"""Bulwark's own Prometheus metrics, beside django-prometheus's (requests, database, cache) on ``/metrics``.

Gauges describe what this worker sees; in multiprocess mode (:mod:`resilience.observability.multiprocess`)
each says how the workers combine (``livemin``: down if any worker sees it down; ``livemax``: the highest) and a
dead worker's series go with it. :func:`metrics_refresh` sets them from memory once a second (a monitor task on
the housekeeping thread: no database, no Redis); :func:`workers_refresh` reads the fleet from Redis every
:data:`WORKERS_REFRESH_SECONDS`. Counters are bumped where the event happens (router, middleware, cache,
idempotency) through the small functions below and are summed over every worker, dead ones included.

- ``bulwark_db_node_up{node}`` (livemin), ``bulwark_db_node_is_primary{node}`` (livemax),
  ``bulwark_db_replica_lag_seconds{node}`` (livemax; replicas whose lag is known), ``bulwark_db_read_only_mode``
  (livemax), ``bulwark_ratelimit_memory_mode`` (livemax), ``bulwark_jwt_active_key_age_seconds`` (livemax; -1:
  unknown, an environment key or no ring read yet), ``bulwark_workers_live`` / ``bulwark_workers_configured``
  (livemax);
- ``bulwark_fallbacks_total{kind}``: ``stale_replica_read`` (primary unusable: a replica answered, maybe stale),
  ``replica_to_primary`` (no current replica: a read went to the primary), ``cache_memory`` (a cache call
  answered from process memory although Redis is configured); ``bulwark_requests_rerun_total``,
  ``bulwark_read_only_rejections_total``, ``bulwark_idempotent_replays_total``;
- ``bulwark_redis_round_trips_total{purpose}``: every round trip the layer makes to Redis (a command, a pipeline or
  a script is one), by what it was for (:data:`resilience.cache.purposes.PURPOSES`): what a request costs in Redis
  is its increase over a number of requests.

``bulwark_payments_pending`` is the shop's (``shop/payments/metrics.py``): resilience never reads shop data.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

FALLBACK_KINDS = ("stale_replica_read", "replica_to_primary", "cache_memory")
WORKERS_REFRESH_SECONDS = 5.0

DB_NODE_UP = Gauge(
    "bulwark_db_node_up",
    "Database node reachable (1) or down (0) as this worker sees it; min over workers.",
    ["node"],
    multiprocess_mode="livemin",
)
DB_NODE_IS_PRIMARY = Gauge(
    "bulwark_db_node_is_primary",
    "1 if the node says it is a primary (not in recovery), else 0.",
    ["node"],
    multiprocess_mode="livemax",
)
DB_REPLICA_LAG = Gauge(
    "bulwark_db_replica_lag_seconds",
    "Replication lag of a replica, measured on the replica (received vs replayed WAL).",
    ["node"],
    multiprocess_mode="livemax",
)
DB_READ_ONLY_MODE = Gauge(
    "bulwark_db_read_only_mode", "1 while the operator's read-only switch is on.", multiprocess_mode="livemax"
)
RATELIMIT_MEMORY_MODE = Gauge(
    "bulwark_ratelimit_memory_mode",
    "1 while rate-limit counters (and the cache) live in process memory, not Redis.",
    multiprocess_mode="livemax",
)
JWT_ACTIVE_KEY_AGE = Gauge(
    "bulwark_jwt_active_key_age_seconds",
    "Age of the signing key; -1 when unknown (an environment key, or no ring read yet).",
    multiprocess_mode="livemax",
)
WORKERS_LIVE = Gauge(
    "bulwark_workers_live",
    "Workers that published their snapshot recently, as this worker reads them (1: only itself, Redis down).",
    multiprocess_mode="livemax",
)
WORKERS_CONFIGURED = Gauge(
    "bulwark_workers_configured", "Workers configured (WEB_CONCURRENCY).", multiprocess_mode="livemax"
)
FALLBACKS = Counter("bulwark_fallbacks", "Fallbacks taken, by kind (reads, or cache calls).", ["kind"])
REQUESTS_RERUN = Counter("bulwark_requests_rerun", "Requests run once more after a database node failed.")
READ_ONLY_REJECTIONS = Counter("bulwark_read_only_rejections", "Writes refused with 503 read_only_mode.")
IDEMPOTENT_REPLAYS = Counter("bulwark_idempotent_replays", "Responses replayed for a repeated Idempotency-Key.")
REDIS_ROUND_TRIPS = Counter(
    "bulwark_redis_round_trips", "Round trips to Redis (a command, a pipeline or a script), by purpose.", ["purpose"]
)
_redis_trip_children: dict[str, Any] = {}  # purpose -> its bound child: no label lookup per round trip

for _kind in FALLBACK_KINDS:
    FALLBACKS.labels(kind=_kind)  # every kind shows from the start, at 0

_workers_refreshed_at = -float("inf")


def fallback_taken(kind: str) -> None:
    """Count one fallback (``kind`` from :data:`FALLBACK_KINDS`)."""
    FALLBACKS.labels(kind=kind).inc()


def redis_round_trip(purpose: str) -> None:
    child = _redis_trip_children.get(purpose)
    if child is None:
        child = _redis_trip_children.setdefault(purpose, REDIS_ROUND_TRIPS.labels(purpose=purpose))
    child.inc()


def request_rerun() -> None:
    """Count one request run again by the database middleware."""
    REQUESTS_RERUN.inc()


def read_only_rejected() -> None:
    """Count one write refused because the database is read-only (primary down or the operator's switch)."""
    READ_ONLY_REJECTIONS.inc()


def idempotent_replayed() -> None:
    """Count one stored response replayed for a repeated ``Idempotency-Key``."""
    IDEMPOTENT_REPLAYS.inc()


def _key_age(now: datetime) -> float:
    from resilience.auth.ring import ring_cache

    ring, _ = ring_cache.peek()
    signer = ring.signer if ring is not None else None
    if signer is None or signer.activated_at is None:
        return -1.0
    return max(0.0, (now - signer.activated_at).total_seconds())


def _ratelimit_in_memory() -> bool:
    from django.conf import settings
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    from resilience.cache import FallbackCache

    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    if isinstance(cache, FallbackCache):
        return cache.uses_memory()
    return isinstance(cache, LocMemCache)


def metrics_refresh() -> None:
    """Set this worker's gauges from what it holds in memory (a monitor task: every second, no I/O)."""
    from resilience.controls.state import db_controls
    from resilience.db.nodes import registry
    from resilience.observability.logs import log_health

    for alias, state in registry().snapshot().items():
        DB_NODE_UP.labels(node=alias).set(1 if state["reachable"] else 0)
        DB_NODE_IS_PRIMARY.labels(node=alias).set(1 if state["role"] == "primary" else 0)
        if state["configured_role"] == "replica" and state["lag_seconds"] is not None:
            DB_REPLICA_LAG.labels(node=alias).set(float(state["lag_seconds"]))
    DB_READ_ONLY_MODE.set(1 if db_controls().read_only else 0)
    RATELIMIT_MEMORY_MODE.set(1 if _ratelimit_in_memory() else 0)
    JWT_ACTIVE_KEY_AGE.set(_key_age(datetime.now(UTC)))
    log_health()  # sets bulwark_log_queue_depth: a listener stuck on a sink shows as a growing queue


def workers_refresh(*, force: bool = False) -> None:
    """The live and configured worker counts (Redis, through the fallback cache's circuit), every few seconds."""
    global _workers_refreshed_at
    from django.conf import settings

    from resilience.health.workers import workers_live

    now = time.monotonic()
    if not force and now - _workers_refreshed_at < WORKERS_REFRESH_SECONDS:
        return
    _workers_refreshed_at = now
    WORKERS_CONFIGURED.set(settings.BULWARK_CONFIG.web_concurrency)
    WORKERS_LIVE.set(len(workers_live().workers))


def register() -> None:
    """Hand both refreshes to the database monitor's housekeeping thread (from ``ResilienceConfig.ready``)."""
    from resilience.db.monitor import monitor_task_register

    monitor_task_register(metrics_refresh, needs_primary=False)
    monitor_task_register(workers_refresh, needs_primary=False)
