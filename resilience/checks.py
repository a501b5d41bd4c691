"""Django system checks for the settings whose absence silently removes a protection.

Each has a stable ID (``bulwark.E001``...: the site is unprotected; ``bulwark.W001``...: a protection is off on
purpose, say so), a message that says what is wrong and a hint that says what to do, like
``django/contrib/admin/checks.py``. They run with every ``manage.py`` command and at server start-up;
silence one only by ID in ``SILENCED_SYSTEM_CHECKS``, with the reason beside it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

ROUTING_MIDDLEWARE = "resilience.db.middleware.DatabaseRoutingMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
REQUEST_ID_MIDDLEWARE = "core.request_id.RequestIdMiddleware"
FAILOVER_ROUTER = "resilience.db.router.FailoverRouter"
NODE_AWARE_ENGINE = "resilience.db.backend"
# The same backend counted by django-prometheus (what settings/base.py uses).
NODE_AWARE_ENGINES = frozenset({NODE_AWARE_ENGINE, "resilience.observability.db_backend"})
FALLBACK_CACHE = "resilience.cache.FallbackCache"
ENVELOPE_HANDLER = "core.api.exception_handler.api_exception_handler"
RATELIMIT_THROTTLE = "resilience.ratelimit.throttles.RateLimitThrottle"


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    middleware = list(settings.MIDDLEWARE)
    found: list[checks.CheckMessage] = []
    if ROUTING_MIDDLEWARE not in middleware:
        found.append(
            checks.Error(
                f"{ROUTING_MIDDLEWARE} is not in MIDDLEWARE: a request that meets a failed database node is not run "
                "again on another, and writes while the primary is down answer 500 instead of 503 read_only_mode.",
                hint=f"Add '{ROUTING_MIDDLEWARE}' to MIDDLEWARE, before '{AUTH_MIDDLEWARE}'.",
                id="bulwark.E001",
            )
        )
    elif AUTH_MIDDLEWARE in middleware and middleware.index(AUTH_MIDDLEWARE) < middleware.index(ROUTING_MIDDLEWARE):
        found.append(
            checks.Error(
                f"{ROUTING_MIDDLEWARE} comes after {AUTH_MIDDLEWARE}: the user lookup then runs outside the routing "
                "state, so a dead replica there fails the request instead of sending it to another node.",
                hint=f"Move '{ROUTING_MIDDLEWARE}' above '{AUTH_MIDDLEWARE}' (right after the request-id middleware).",
                id="bulwark.E002",
            )
        )
    if REQUEST_ID_MIDDLEWARE not in middleware:
        found.append(
            checks.Warning(
                f"{REQUEST_ID_MIDDLEWARE} is not in MIDDLEWARE: responses carry no X-Request-ID and an error's "
                "request_id matches no log line.",
                hint=f"Add '{REQUEST_ID_MIDDLEWARE}' as the first MIDDLEWARE entry.",
                id="bulwark.W001",
            )
        )
    return found


def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    if FAILOVER_ROUTER not in settings.DATABASE_ROUTERS:
        found.append(
            checks.Error(
                f"{FAILOVER_ROUTER} is not in DATABASE_ROUTERS: reads never go to a replica, and nothing routes "
                "around a dead primary or replica.",
                hint=f"Set DATABASE_ROUTERS = ['{FAILOVER_ROUTER}'].",
                id="bulwark.E003",
            )
        )
    plain = sorted(alias for alias, db in settings.DATABASES.items() if db.get("ENGINE") not in NODE_AWARE_ENGINES)
    if plain:
        found.append(
            checks.Error(
                f"Database alias(es) {', '.join(plain)} do not use the {NODE_AWARE_ENGINE} engine: their queries have "
                "no client-side deadline (a hung node stalls a request forever) and no node breaker.",
                hint=f"Set ENGINE to '{NODE_AWARE_ENGINE}' for every alias (settings/base.py does).",
                id="bulwark.E004",
            )
        )
    return found


def check_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    alias = getattr(settings, "RATELIMIT_USE_CACHE", "default")
    backend = settings.CACHES.get(alias, {}).get("BACKEND")
    if backend != FALLBACK_CACHE:
        found.append(
            checks.Error(
                f"The rate-limit cache '{alias}' uses {backend}, not {FALLBACK_CACHE}: when Redis is down every "
                "limited request fails (or is let through unlimited) instead of being counted in memory.",
                hint=f"Set CACHES['{alias}']['BACKEND'] = '{FALLBACK_CACHE}'.",
                id="bulwark.E005",
            )
        )
    throttles = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_CLASSES", [])
    if RATELIMIT_THROTTLE not in throttles:
        found.append(
            checks.Error(
                f"{RATELIMIT_THROTTLE} is not in REST_FRAMEWORK['DEFAULT_THROTTLE_CLASSES']: no API view is "
                "rate limited (login brute force, checkout floods).",
                hint=f"Add '{RATELIMIT_THROTTLE}' to DEFAULT_THROTTLE_CLASSES.",
                id="bulwark.E006",
            )
        )
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        found.append(
            checks.Warning(
                "Rate limiting is turned off (RATELIMIT_ENABLED=false): every limit is off.",
                hint="Only for load tests; unset RATELIMIT_ENABLED to turn the limits back on.",
                id="bulwark.W002",
            )
        )
    return found


def check_error_envelope(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    handler = settings.REST_FRAMEWORK.get("EXCEPTION_HANDLER")
    if handler == ENVELOPE_HANDLER:
        return []
    return [
        checks.Error(
            f"REST_FRAMEWORK['EXCEPTION_HANDLER'] is {handler!r}: API errors leave without the error envelope and "
            "its stable codes, and a database failure is not handed to the routing middleware.",
            hint=f"Set REST_FRAMEWORK['EXCEPTION_HANDLER'] = '{ENVELOPE_HANDLER}'.",
            id="bulwark.E007",
        )
    ]


def register() -> None:
    """Called from ResilienceConfig.ready()."""
    for check in (check_middleware, check_databases, check_rate_limits, check_error_envelope):
        checks.register(check, "bulwark")
