"""For benchmarks only: Bulwark's settings without the resilience layer, the "off" side of ``python -m bench.hotpaths``.

``DJANGO_SETTINGS_MODULE=settings.baseline gunicorn settings.baseline_wsgi`` (the WSGI entry without the serving
layer). Never deploy it: a dead replica or primary fails requests with 500s, a hung node stalls them for ever, and
nothing is rate limited. It exists to measure what the layer costs a request, against the same app without it.

Removed, against ``settings.base``:

- the database routing middleware (``resilience.db.middleware.DatabaseRoutingMiddleware``: routing state, re-runs,
  ``read_only_mode``, read-your-writes tokens), the router (``DATABASE_ROUTERS = []``), the replicas (only
  ``default``, the primary) and the per-process node monitor and dashboard snapshot publisher
  (``BULWARK_DB_MONITOR = False``: ``gunicorn.conf.py`` starts neither);
- Bulwark's node-aware engine (``resilience.observability.db_backend`` over ``resilience.db.backend``: node breakers,
  the client-side query deadline and its watchdog): the stock Django PostgreSQL engine instead, as counted by
  django-prometheus (``django_prometheus.db.backends.postgresql`` is ``django.db.backends.postgresql`` plus the
  same ``django_db_*`` counters the layer's engine keeps), so database metrics stay on on both sides and the
  difference measured is the layer's;
- the rate limits: no DRF throttle (``DEFAULT_THROTTLE_CLASSES = []``, so views' ``ratelimit_scopes`` are never
  read) and ``RATELIMIT_ENABLE = False`` (the staff login and second-factor limits, which call the policy
  directly);
- the bulkheads and time budgets: ``resilience.serving.wsgi.ServingMiddleware`` wraps the application in
  ``settings/wsgi.py``; ``settings/baseline_wsgi.py`` is the same entry without it.

There is no breaker middleware to remove: the one breaker on a hot path wraps the payment gateway's client, and the
benchmark sets no ``PAYMENT_GATEWAY_URL`` (checkout calls no gateway on either side; orders stay pending_payment).

Kept, because the hot paths need them to work as they do in production, or because they are not the resilience
layer: logging (``RequestLogMiddleware``, one JSON record per request), request ids, metrics (django-prometheus's
before/after middleware, ``/metrics``), tracing (started by ``gunicorn.conf.py`` when OTLP endpoints are set),
HTTP limits (``core.wsgi_limits``), the key ring and JWT authentication, the idempotency records of checkout (an
order's ``Idempotency-Key`` is part of the API, not of the layer), and the cache (Redis with its memory fallback;
with the rate limits gone no hot path touches it).

The system checks that flag exactly these removals are silenced here by ID (``resilience/checks.py``).
"""

from settings.base import *  # noqa: F403
from settings.base import DATABASES as _BASE_DATABASES
from settings.base import MIDDLEWARE as _BASE_MIDDLEWARE
from settings.base import REST_FRAMEWORK as _BASE_REST_FRAMEWORK
from settings.base import SILENCED_SYSTEM_CHECKS as _BASE_SILENCED

BASELINE_ENGINE = "django_prometheus.db.backends.postgresql"
REMOVED_MIDDLEWARE = ("resilience.db.middleware.DatabaseRoutingMiddleware",)

MIDDLEWARE = [m for m in _BASE_MIDDLEWARE if m not in REMOVED_MIDDLEWARE]


def _stock(entry: dict) -> dict:
    """The primary's entry on the stock engine: the same connection settings, without the layer's own keys."""
    stock = {key: value for key, value in entry.items() if key not in ("QUERY_DEADLINE", "TEST")}
    stock["ENGINE"] = BASELINE_ENGINE
    return stock


DATABASES = {"default": _stock(_BASE_DATABASES["default"])}
DATABASE_ROUTERS: list[str] = []
BULWARK_DB_MONITOR = False

RATELIMIT_ENABLE = False
REST_FRAMEWORK = {**_BASE_REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}

SILENCED_SYSTEM_CHECKS = [
    *_BASE_SILENCED,
    "bulwark.E001",  # no routing middleware: on purpose, above
    "bulwark.E003",  # no failover router: on purpose
    "bulwark.E004",  # the stock engine: on purpose
    "bulwark.E006",  # no rate-limit throttle: on purpose
    "bulwark.W002",  # rate limits off: on purpose
]
