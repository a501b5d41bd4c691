"""FallbackCache behind real Redis Sentinels: it uses the master they name, reads included, counts in memory while
they name none (a failover), and follows the new master without a restart."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from resilience.cache import FallbackCache
from resilience.config.loader import ConfigError, load_config
from tests.redis_servers import SentinelSet

pytestmark = pytest.mark.usefixtures("fresh_circuits")
TIMEOUT = 0.25


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    cluster = SentinelSet(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def sentinel_cache(cluster: SentinelSet, **options: float) -> FallbackCache:
    params = {
        "KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": TIMEOUT,
            "SOCKET_TIMEOUT": TIMEOUT,
            "SENTINELS": cluster.sentinels,
            **options,
        },
    }
    return FallbackCache(f"redis://{cluster.master_name}/0", params)


def in_server(cache: FallbackCache, port: int, key: str) -> bool:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return bool(client.exists(cache.make_and_validate_key(key)))
    finally:
        client.close()


def test_calls_go_to_the_master_the_sentinels_name_reads_included(sentinels: SentinelSet) -> None:
    cache = sentinel_cache(sentinels)
    assert cache.add("counter", 0, 60) and cache.incr("counter") == 1
    assert in_server(cache, sentinels.master.port, "counter")
    # A read right after a write sees it: reads go to the master, never to the (asynchronous) replica.
    for count in range(2, 50):
        assert cache.incr("counter") == count and cache.get("counter") == count
        assert cache.get_direct("counter") == count  # the hot path's get: through the pooled master client here
    pools = cache._redis.client._clients  # django-redis: [master's, replicas']
    assert pools[0] is not None and pools[1] is None  # the replicas' pool was never even opened
    assert cache.snapshot()["backend"] == "redis"
    assert (
        cache.name
        == f"sentinel master {sentinels.master_name} ("
        + ",".join(f"127.0.0.1:{port}" for port in sentinels.ports)
        + ")"
    )


def test_a_master_killed_means_memory_until_the_sentinels_promote_its_replica(sentinels, caplog) -> None:
    caplog.set_level(logging.INFO, logger="resilience.cache")
    cache = sentinel_cache(sentinels, PROBE_INTERVAL=0.2)
    cache.set("before", "redis", 60)
    assert in_server(cache, sentinels.master.port, "before")
    old_master, replica_port = sentinels.master.port, sentinels.replica.port
    SentinelSet.wait_for(lambda: in_server(cache, replica_port, "before"), "replication of the key")

    sentinels.master.kill()
    assert cache.add("during", 0, 60) is True and cache.incr("during") == 1  # answered from memory, at once
    assert cache.snapshot()["backend"] == "memory"

    failover = sentinels.wait_for(lambda: sentinels.settled_on(replica_port), "promoted replica")
    # Back on Redis by itself (no restart, no new cache). Right after a failover the Sentinels disagree for a
    # moment and a call may open the circuit once more: the next probe closes it again.
    back = SentinelSet.wait_for(lambda: cache.get("before") == "redis", "the new master's data", timeout=10)
    assert cache.snapshot()["backend"] == "redis"  # "before" was replicated before the kill: the new master has it
    assert cache.add("after", 0, 60) and cache.incr("after") == 1
    assert in_server(cache, replica_port, "after")
    assert sentinels.master_port() != old_master
    logging.getLogger(__name__).info("sentinel failover %.1f s, back on Redis %.1f s later", failover, back)


def test_no_sentinel_answering_is_memory_not_an_error(tmp_path) -> None:
    cluster = SentinelSet(tmp_path)  # never started: nothing listens on its ports
    cache = sentinel_cache(cluster, PROBE_INTERVAL=0.1)
    cache.set("k", 1, 60)
    assert cache.get("k") == 1 and cache.snapshot()["backend"] == "memory"


# ---- configuration -------------------------------------------------------------------------------------------


def env(**overrides: str) -> dict[str, str]:
    base = {
        "SECRET_KEY": "s" * 20 + "abcdefghij" * 4,
        "JWT_SECRET": "j" * 40,
        "DATABASE_URL": "postgres://u:p@db:5432/bulwark",
        "DJANGO_ENV": "development",
        "DOTENV_FILE": "none",
    }
    return {**base, **overrides}


def test_redis_sentinels_configure_the_master_by_name() -> None:
    config = load_config(
        env(REDIS_SENTINELS="10.0.0.5:26379, 10.0.0.6:26379,[::1]:26380", REDIS_SENTINEL_MASTER="shop")
    )
    assert config.redis_sentinels == [("10.0.0.5", 26379), ("10.0.0.6", 26379), ("::1", 26380)]
    assert config.redis_url == "redis://shop/0"


def test_the_sentinel_master_name_defaults_to_mymaster() -> None:
    assert load_config(env(REDIS_SENTINELS="s1:26379,s2:26379,s3:26379")).redis_url == "redis://mymaster/0"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_URL": "redis://r:6379/0"}, "together with REDIS_URL"),
        ({"REDIS_SENTINELS": "s1"}, "is not host:port"),
        ({"REDIS_SENTINELS": "s1:99999"}, "is not host:port"),
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "a/b"}, "not a Sentinel master name"),
    ],
)
def test_a_bad_sentinel_setting_fails_fast_with_a_clear_error(overrides, message) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env(**overrides))
    assert message in str(excinfo.value)


def test_one_sentinel_is_reported_as_a_single_point_of_failure() -> None:
    config = load_config(env(REDIS_SENTINELS="s1:26379"))
    assert any(
        finding.name == "REDIS_SENTINELS" and "single point of failure" in finding.message
        for finding in config.warnings
    )
