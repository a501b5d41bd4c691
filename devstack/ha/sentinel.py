"""Redis and Sentinel seen from outside: who the Sentinels name master, and each node's own view.

Talks RESP through redis-py with sub-second timeouts; a node that does not answer is simply absent from the
answers. The Sentinels' view decides (what Bulwark follows with REDIS_SENTINELS); each node's
``INFO replication`` tells whether a replica's link is up.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..procs import LOOPBACK
from .topology import MASTER_NAME


def _client(port: int, timeout: float = 0.5) -> redis.Redis:
    # No retries: redis-py's default retries a refused connection with backoff for seconds; a node that does
    # not answer at once is reported as not answering.
    return redis.Redis(
        host=LOOPBACK, port=port, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def ping(port: int) -> bool:
    try:
        return bool(_client(port).ping())
    except (redis.RedisError, OSError):
        return False


def sentinel_master(port: int) -> int | None:
    """The master's port as this Sentinel names it, or None."""
    try:
        reply = _client(port).execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
    except (redis.RedisError, OSError):
        return None
    if not reply:
        return None
    return int(reply[1])


def sentinel_info(port: int) -> dict[str, Any] | None:
    """``SENTINEL MASTER bulwark`` as a dict (num-slaves, num-other-sentinels, flags, ...), or None."""
    try:
        reply = _client(port).execute_command("SENTINEL", "MASTER", MASTER_NAME)
    except (redis.RedisError, OSError):
        return None
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    if isinstance(reply, list):
        items = [_text(x) for x in reply]
        return dict(zip(items[::2], items[1::2], strict=False))
    return None


def replication(port: int) -> dict[str, Any] | None:
    """``INFO replication`` of a Redis node (role, master_port, master_link_status, connected_slaves...)."""
    try:
        return _client(port).info("replication")
    except (redis.RedisError, OSError):
        return None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
