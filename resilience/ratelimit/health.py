"""The rate-limit area's health: which store counts (Redis, or each worker's memory) and the Redis circuit.

It reads the fallback cache's circuit (:mod:`resilience.cache`), which the cache's own probe keeps current: no
connection is opened here. Redis down is degraded (``warn``), never down: every limit keeps holding per worker,
at its per-worker share. Without a shared store the area is a single point of failure.
"""

from __future__ import annotations

import dataclasses

from django.conf import settings

from resilience.cache import cache_state
from resilience.health.base import AreaCheck, AreaStatus, Component


def rate_limit_status() -> AreaStatus:
    state = cache_state()
    enabled = settings.BULWARK_CONFIG.ratelimit_enabled
    components: list[Component] = []
    if not state["redis_configured"]:
        components.append(Component("ratelimit", "store", "memory", "pass", "memory", output="no REDIS_URL"))
        detail, risk = "counting in each worker's memory (no Redis configured)", "no shared store for counters"
    else:
        redis_up = state["breaker"] == "closed"
        components.append(
            Component(
                "redis",
                "reachable",
                state["redis"],
                "pass" if redis_up else "fail",
                redis_up,
                output="" if redis_up else state.get("last_error") or "unreachable",
                component_type="datastore",
            )
        )
        store = state["backend"]
        output = ""
        if state["forced_memory"]:
            output = "an operator keeps counters in memory (ratelimit.force_memory)"
        elif store == "memory":
            output = "Redis down: each worker counts its share of every limit in memory"
        components.append(
            Component("ratelimit", "store", store, "pass" if store == "redis" else "warn", store, output=output)
        )
        detail = "limits counted in Redis, shared by every worker" if store == "redis" else output
        risk = "" if store == "redis" else "counters are per worker until Redis is back"
    if not enabled:
        components.append(Component("ratelimit", "enabled", "limits", "warn", False, output="RATELIMIT_ENABLED is off"))
        detail = "rate limits OFF (RATELIMIT_ENABLED=false); " + detail
    degraded = any(c.status == "fail" for c in components)  # Redis down: limits hold per worker (warn), not down
    return AreaStatus("rateLimit", detail, components, bool(risk), risk, verdict="warn" if degraded else None)


@dataclasses.dataclass
class RateLimitHealth(AreaCheck):
    area = "rateLimit"

    def assess(self) -> AreaStatus:
        return rate_limit_status()
