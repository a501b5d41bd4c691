"""Redis behind Sentinels: django-redis's Sentinel support, reading from the master only.

Sentinel decides which Redis is master; Bulwark follows it through django-redis's ``SentinelConnectionFactory``
(redis-py's ``SentinelConnectionPool`` asks the Sentinels for the master's address on every new connection, and a
connection that finds its server demoted -- ``READONLY`` -- is dropped). django-redis's own ``SentinelClient``
sends reads to a replica pool; here that would be wrong: a rate-limit counter, a replay guard or a breaker's
shared state read from a replica lags the master (asynchronous replication), and a lagging count lets requests
through that the limit should refuse. :class:`MasterSentinelClient` is that client with every call on the master.

While the Sentinels name no master (a failover in progress, ≈ 3-4 s with ``down-after-milliseconds 2000``),
redis-py raises ``MasterNotFoundError`` (a ``ConnectionError``): the fallback cache's circuit opens and the
process counts in memory until its probe (:func:`sentinel_ping`) finds a master again.
"""

from __future__ import annotations

from typing import Any

from django_redis.client import SentinelClient
from redis.sentinel import Sentinel

SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"
CLIENT_CLASS = "resilience.cache.sentinel.MasterSentinelClient"


class MasterSentinelClient(SentinelClient):
    """django-redis's Sentinel client with reads on the master too (never a lagging replica)."""

    def get_next_client_index(self, write: bool = True, tried: list[int] | None = None) -> int:
        return 0  # the master's pool; SentinelClient's index 1 is the replicas'


def master_name(location: str) -> str:
    """The service name in a Sentinel location (``redis://<master name>/0``)."""
    return location.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def sentinel_options(
    sentinels: list[tuple[str, int]], *, connect_timeout: float, socket_timeout: float, retry: Any
) -> dict:
    """The django-redis OPTIONS that make a cache follow the Sentinels' master: the same short timeouts and no
    retries on the connections to the Sentinels as on those to Redis (a Sentinel down costs one timeout, and the
    next one is asked)."""
    return {
        "CLIENT_CLASS": CLIENT_CLASS,
        "CONNECTION_FACTORY": SENTINEL_FACTORY,
        "SENTINELS": [tuple(sentinel) for sentinel in sentinels],
        "SENTINEL_KWARGS": _to_sentinels(connect_timeout, socket_timeout, retry),
    }


def _to_sentinels(connect_timeout: float, socket_timeout: float, retry: Any) -> dict:
    return {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout, "retry": retry}


def sentinel_ping(
    sentinels: list[tuple[str, int]], location: str, *, connect_timeout: float, socket_timeout: float, retry: Any
) -> None:
    """PING the master the Sentinels name now, on a connection of its own; raises when there is none."""
    kwargs = _to_sentinels(connect_timeout, socket_timeout, retry)
    manager = Sentinel(sentinels, sentinel_kwargs=kwargs, **kwargs)
    client = manager.master_for(master_name(location), **kwargs)
    try:
        client.ping()
    finally:
        client.close()
