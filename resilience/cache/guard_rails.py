"""Guard rail of the rate-limit store (registered in ResilienceConfig.ready): a scratch fallback cache, with
the live timeouts, at a Redis address that accepts connections and never answers (a hung Redis, the worst
case), must fall back to memory within one timeout and then skip Redis while it keeps counting."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import closing

from django.conf import settings

from resilience.cache import FallbackCache, cache_state
from resilience.guard_rails import Line, guard_rail_register, quiet


def register() -> None:
    guard_rail_register("Fallback cache (Redis -> memory)", check_cache)


def check_cache() -> Iterator[Line]:
    """The rate-limit store falls back to memory within one timeout, then counts on without calling Redis."""
    options = settings.CACHES["default"].get("OPTIONS", {})
    budget = float(options.get("SOCKET_CONNECT_TIMEOUT", 0.25)) + float(options.get("SOCKET_TIMEOUT", 0.25)) + 0.5
    accepted: list[socket.socket] = []
    with closing(socket.socket()) as hung, quiet("resilience.cache"):
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        hung.setblocking(False)
        location = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        scratch = FallbackCache(location, {"KEY_PREFIX": "guard-rail", "OPTIONS": {**options, "PROBE_INTERVAL": 60}})
        try:
            started = time.monotonic()
            scratch.add("count", 0, 60)
            first = time.monotonic() - started
            tried_redis = _accept_all(hung, accepted)
            started = time.monotonic()
            scratch.incr("count")
            count = scratch.incr("count")
            later = time.monotonic() - started
            skipped_redis = _accept_all(hung, accepted) == 0
            in_memory = scratch.uses_memory()
        finally:
            if scratch.circuit is not None:
                scratch.circuit.stop()
            scratch.close()
            for connection in accepted:
                connection.close()
    yield (
        "ok" if tried_redis and in_memory and first <= budget else "fail",
        f"Redis hung: the first call fell back to memory in {first * 1000:.0f} ms (budget {budget * 1000:.0f} ms)",
    )
    yield (
        "ok" if count == 2 and skipped_redis else "fail",
        f"later calls skip Redis (no connection attempt; {later * 1000:.1f} ms for two) and counting goes on in memory",
    )
    live = cache_state()
    if not live.get("redis_configured"):
        yield ("warn", "no REDIS_URL: rate limits are counted in each process only")
    elif live.get("breaker") == "open" or live.get("forced_memory"):
        yield ("warn", f"the live cache is in memory now ({live.get('breaker')}, forced={live.get('forced_memory')})")
    else:
        yield ("ok", "the live cache is on Redis")


def _accept_all(listener: socket.socket, into: list[socket.socket]) -> int:
    """Accept the connections waiting on a non-blocking listener (kept open in ``into``); how many there were."""
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        into.append(connection)
        count += 1
