"""``FallbackCache``: Redis (through django-redis) while it answers, this process's memory when it does not.

``LOCATION`` is the Redis URL; empty means no Redis (memory only, e.g. a development machine). OPTIONS:
``SOCKET_CONNECT_TIMEOUT`` and ``SOCKET_TIMEOUT`` (seconds, default 0.25 each), ``PROBE_INTERVAL`` (seconds,
default 1), ``MEMORY_MAX_ENTRIES`` (default 100 000), ``SENTINELS`` (``[(host, port), ...]``: follow the master
the Sentinels name, ``LOCATION`` then being ``redis://<master name>/0``; see :mod:`resilience.cache.sentinel`).
``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION`` and ``TIMEOUT`` apply to both stores alike, so a key means the same
thing in either.

Every call goes to Redis unless the circuit is open or the operator switch ``ratelimit.force_memory`` is on;
a Redis failure opens the circuit (see :mod:`resilience.cache.circuit`) and the same call is answered from
memory. redis-py's own retries are turned off (``Retry(NoBackoff(), 0)`` on every connection of the pool,
through django-redis's ``CONNECTION_POOL_KWARGS``): a failure costs one timeout, not redis-py 6+'s default of
ten retries with backoff. The read-your-writes GET and the rate limiter's script go out on each thread's own
connection (:meth:`FallbackCache._direct_command`): the GET is sent once more on a new connection when a reused
one turns out to have been ended by the server (never after a timeout), the script is never sent twice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django_redis.cache import RedisCache
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from resilience.cache.circuit import REDIS_FAILURES, RedisCircuit, circuit_for
from resilience.cache.purposes import CACHE_PROBE, purpose_for
from resilience.cache.sentinel import master_name, sentinel_options, sentinel_ping
from resilience.controls.state import ratelimit_force_memory
from resilience.observability.cache import CountedMemoryCache, CountedRedisCache
from resilience.observability.metrics import fallback_taken, redis_round_trip

logger = logging.getLogger("resilience.cache")

DEFAULT_SOCKET_TIMEOUT = 0.25
DEFAULT_PROBE_INTERVAL = 1.0
DEFAULT_MEMORY_MAX_ENTRIES = 100_000

_SHARED_PARAMS = ("KEY_PREFIX", "VERSION", "KEY_FUNCTION", "TIMEOUT")


def no_retry() -> Retry:
    """redis-py's retry policy for "never retry": one attempt, then the error."""
    return Retry(NoBackoff(), 0)


IN_MEMORY = object()  # FallbackCache.run_script's answer when Redis was not used


def _first(keys: Iterable[Any]) -> Any:
    return next(iter(keys), None)


def redis_name(url: str) -> str:
    """``host:port/db`` of a Redis URL, for logs and health: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class FallbackCache(BaseCache):
    """A Django cache backend: Redis with a circuit breaker, process memory as the fallback."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        shared = {name: params[name] for name in _SHARED_PARAMS if name in params}
        self.location = location.strip() if isinstance(location, str) else ""
        memory_name = f"bulwark-fallback:{self.location or 'memory-only'}"
        self._memory: LocMemCache = CountedMemoryCache(  # gets counted (django-prometheus's metrics)
            memory_name,
            {**shared, "OPTIONS": {"MAX_ENTRIES": options.get("MEMORY_MAX_ENTRIES", DEFAULT_MEMORY_MAX_ENTRIES)}},
        )
        self._redis: RedisCache | None = None
        self._script_shas: dict[str, str] = {}  # Lua source -> its SHA-1 (EVALSHA's name for it), computed once
        # This thread's own connection (see _direct_command), and whether it answered before (a failure now may be
        # the server having ended it). Per thread: Django builds a cache object per thread, but a caller may share one.
        self._direct = threading.local()
        self.circuit: RedisCircuit | None = None
        if not self.location:
            return
        connect_timeout = float(options.get("SOCKET_CONNECT_TIMEOUT", DEFAULT_SOCKET_TIMEOUT))
        socket_timeout = float(options.get("SOCKET_TIMEOUT", DEFAULT_SOCKET_TIMEOUT))
        self.connect_timeout, self.socket_timeout = connect_timeout, socket_timeout
        self.sentinels: list[tuple[str, int]] = [tuple(sentinel) for sentinel in options.get("SENTINELS") or ()]
        redis_options = {
            "SOCKET_CONNECT_TIMEOUT": connect_timeout,
            "SOCKET_TIMEOUT": socket_timeout,
            # Reaches every Connection of the pool (django-redis passes these to ConnectionPool.from_url).
            "CONNECTION_POOL_KWARGS": {"retry": no_retry(), "retry_on_error": []},
            "IGNORE_EXCEPTIONS": False,  # we need the failure to switch stores
        }
        if self.sentinels:
            redis_options.update(
                sentinel_options(
                    self.sentinels, connect_timeout=connect_timeout, socket_timeout=socket_timeout, retry=no_retry()
                )
            )
        # django-redis with django-prometheus's get/hit/miss/fail counts
        self._redis = CountedRedisCache(self.location, {**shared, "OPTIONS": redis_options})
        interval = float(options.get("PROBE_INTERVAL", DEFAULT_PROBE_INTERVAL))
        self.circuit = circuit_for(self.location, lambda: RedisCircuit(self.name, self._probe, interval=interval))

    @property
    def name(self) -> str:
        """What logs and health call the store: ``host:port/db``, or the Sentinels' master; never a password."""
        if self.sentinels:
            listed = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel master {master_name(self.location)} ({listed})"
        return redis_name(self.location)

    # ---- which store ------------------------------------------------------------------------------------------

    def _probe(self) -> None:
        """PING on a connection of its own (same short timeouts, no retries) -- to the master the Sentinels name
        now, with Sentinels; then drop the pool's idle connections, which point at the Redis that went away."""
        redis_round_trip(CACHE_PROBE)
        if self.sentinels:
            sentinel_ping(
                self.sentinels,
                self.location,
                connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
                retry=no_retry(),
            )
        else:
            client = redis.Redis.from_url(
                self.location,
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
                retry=no_retry(),
            )
            try:
                client.ping()
            finally:
                client.close()
        if self._redis is not None:
            self._redis.client.get_client(write=True).connection_pool.disconnect(inuse_connections=False)

    def uses_memory(self) -> bool:
        """Whether the next call is answered from this process's memory (no Redis, circuit open, or forced)."""
        if self._redis is None or self.circuit is None:
            return True
        forced = ratelimit_force_memory()
        self.circuit.note_forced(forced)
        return forced or self.circuit.is_open

    def _call(self, operation: str, key: Any, call: Callable[[BaseCache], Any]) -> Any:
        if not self.uses_memory():
            redis_round_trip(purpose_for(key))
            try:
                return call(self._redis)  # type: ignore[arg-type]
            except REDIS_FAILURES as exc:
                self.circuit.trip(exc, operation)  # type: ignore[union-attr]
        if self._redis is not None:
            fallback_taken("cache_memory")  # Redis configured, but this call is answered from memory
        return call(self._memory)

    def get_direct(self, key: Any, default: Any = None) -> Any:
        """``get`` for a value read on every request (the read-your-writes position): one GET on this thread's own
        connection (:meth:`_direct_command`), with django-redis's key and decoding. Counted as a round trip like
        any call (``bulwark_redis_round_trips_total``), not in django-prometheus's ``django_cache_get_total``. In
        memory (no Redis, circuit open, forced), or when this very call fails (the circuit then opens), it is an
        ordinary :meth:`get` of the memory store."""
        if not self.uses_memory():
            redis_round_trip(purpose_for(key))
            try:
                raw = self._direct_command("GET", self._redis.make_key(key), resend=True)  # type: ignore[union-attr]
            except REDIS_FAILURES as exc:
                self.circuit.trip(exc, "get")  # type: ignore[union-attr]
            else:
                return default if raw is None else self._redis.client.decode(raw)  # type: ignore[union-attr]
        return self._call("get", key, lambda cache: cache.get(key, default))

    def _direct_command(self, *command: Any, resend: bool = False) -> Any:
        """One command on this thread's own connection (Django builds a cache object per thread), made from the
        master's pool's connection class and settings (address, timeouts, no retries): redis-py's ``send_command``
        and ``read_response``, without its client's dispatch and its pool -- for what runs on the hot path, the
        read-your-writes GET and the rate limiter's script. Measured on a GET (thread CPU, loop of 3000): 16 us
        and 70 Python calls, against 45 us and 211 through django-redis's ``get`` -- the pool checks every
        connection it hands out for unread data (a non-blocking read and two timeout switches: three system
        calls), and the client's retry and observability hooks run even when off.

        The pool's check is there to replace a connection the server ended while idle (a restart, an idle
        timeout). Here: a command that may run twice (``resend``: a GET) is sent once more on a new connection
        when a reused one fails with a connection error (not a timeout: a hung Redis costs one timeout, not two);
        one that must not (a script that counts) gets the pool's check first instead, and no second try. A
        connection made before the circuit's last trip is replaced (the Redis it reached may be gone, e.g. behind
        a moved address), and so is one that met a read-only replica. With Sentinels, whose pool finds the master
        per connection, the pooled client runs the command."""
        direct = self._direct
        connection = getattr(direct, "connection", None)
        trips = self.circuit.trips if self.circuit is not None else 0
        if connection is None:
            client = self._redis.client.get_client(write=True)  # type: ignore[union-attr]  # the master's
            pool = client.connection_pool
            if type(pool) is not redis.ConnectionPool:
                return client.execute_command(*command)
            connection = direct.connection = pool.connection_class(**pool.connection_kwargs)
            direct.reused, direct.trips = False, trips
        if direct.trips != trips:
            connection.disconnect()
            direct.reused, direct.trips = False, trips
        reused, direct.reused = direct.reused, False
        if reused and not resend:
            try:
                stale = connection.can_read()  # unread data, or the server's end of the connection (raises)
            except REDIS_FAILURES:
                stale = True
            if stale:
                connection.disconnect()
                reused = False
        try:
            answer = self._send(connection, command)
        except (RedisTimeoutError, ResponseError):  # a hung Redis (one timeout is the failure), or Redis's answer
            raise
        except REDIS_FAILURES:
            if not (reused and resend):
                raise
            logger.info("the direct connection to Redis %s was gone; sending again on a new one", self.name)
            answer = self._send(connection, command)
        direct.reused = True
        return answer

    def _send(self, connection: redis.Connection, command: tuple[Any, ...]) -> Any:
        try:
            connection.send_command(*command)
            return connection.read_response()
        except ReadOnlyError:  # a replica now (demoted): the next command goes to a new connection
            connection.disconnect()
            raise
        except ResponseError:  # Redis answered (an error reply): the connection is fine
            self._direct.reused = True
            raise
        except REDIS_FAILURES:
            connection.disconnect()
            raise

    def run_script(self, script: str, keys: list[Any], args: list[Any], *, purpose: str) -> Any:
        """Run a Lua script in Redis (one round trip: ``EVALSHA``, loaded again if Redis lost it) on the cache's own
        keys (``make_key``: ``KEY_PREFIX`` and ``VERSION`` apply). Returns what the script returns, or
        :data:`IN_MEMORY` when the cache is in memory now -- Redis is not configured, the circuit is open, the
        operator forced memory, or this very call failed (the circuit is then open) -- and the caller counts in
        memory instead: a script has no memory twin."""
        if self.uses_memory():
            return IN_MEMORY
        redis_round_trip(purpose)
        sha = self._script_shas.get(script)
        if sha is None:
            sha = self._script_shas.setdefault(script, hashlib.sha1(script.encode()).hexdigest())  # noqa: S324 - Redis's name
        command = ("EVALSHA", sha, len(keys), *(self._redis.make_key(key) for key in keys), *args)  # type: ignore[union-attr]
        try:
            try:
                return self._direct_command(*command)  # as the read-your-writes GET: the thread's own connection
            except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH): load it, once, and again
                self._direct_command("SCRIPT", "LOAD", script)
                return self._direct_command(*command)
        except REDIS_FAILURES as exc:
            self.circuit.trip(exc, "script")  # type: ignore[union-attr]
            fallback_taken("cache_memory")
            return IN_MEMORY

    def snapshot(self) -> dict[str, Any]:
        """The state as operators see it (``test_guard_rails``; health checks build on it)."""
        if self.circuit is None:
            return {"backend": "memory", "redis_configured": False, "breaker": None, "forced_memory": False}
        state = self.circuit.snapshot()
        forced = ratelimit_force_memory()
        state.update(
            backend="memory" if forced or state["breaker"] == "open" else "redis",
            redis_configured=True,
            forced_memory=forced,
            connect_timeout=self.connect_timeout,
            socket_timeout=self.socket_timeout,
        )
        return state

    # ---- the cache API, delegated -------------------------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._call("add", key, lambda store: store.add(key, value, timeout, version=version))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._call("get", key, lambda store: store.get(key, default, version=version))

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> Any:
        return self._call("set", key, lambda store: store.set(key, value, timeout, version=version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._call("touch", key, lambda store: store.touch(key, timeout, version=version))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._call("delete", key, lambda store: store.delete(key, version=version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        keys = list(keys)
        return self._call("get_many", _first(keys), lambda store: store.get_many(keys, version=version))

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list:
        result = self._call("set_many", _first(data), lambda store: store.set_many(data, timeout, version=version))
        return result or []  # django-redis returns None; Django's contract is "the keys that failed"

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        keys = list(keys)
        self._call("delete_many", _first(keys), lambda store: store.delete_many(keys, version=version))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._call("has_key", key, lambda store: store.has_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._call("incr", key, lambda store: store.incr(key, delta, version=version))

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._call("decr", key, lambda store: store.decr(key, delta, version=version))

    def clear(self) -> None:
        """Clear the store in use, and memory always (entries kept there during an outage are stale)."""
        self._call("clear", None, lambda store: store.clear())
        self._memory.clear()

    def close(self, **kwargs: Any) -> None:
        """End of request (Django's ``request_finished``): django-redis keeps its pool unless told otherwise."""
        if self._redis is not None and not self.uses_memory():
            try:
                self._redis.close(**kwargs)
            except REDIS_FAILURES as exc:
                self.circuit.trip(exc, "close")  # type: ignore[union-attr]
