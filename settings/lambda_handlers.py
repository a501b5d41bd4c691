"""AWS Lambda entry points: one handler per traffic class, ``settings.lambda_handlers.catalog`` ... ``.ops``.

Each of :data:`catalog`, :data:`auth`, :data:`checkout`, :data:`admin` and :data:`ops` is an ``(event, context)``
handler made with apig-wsgi (``make_lambda_handler``) for API Gateway events: REST API (payload 1.0) and HTTP API
(payload 1.0 or 2.0). All five wrap ONE Django application, built once per process when this module is imported
(a Lambda cold start), each in its own :class:`resilience.serving.wsgi.ServingMiddleware` serving its class only:
a path of another class answers ``404 not_found`` (the JSON envelope, ``detail.traffic_class`` naming the path's
class), so a route pointed at the wrong function shows at once instead of being served by it. ``SERVING_POOL`` is
irrelevant here: every handler is strict, and ``ops`` paths are answered by the ``ops`` handler only. Each
response carries ``X-Traffic-Class``; the class's body limit (``SERVING_MAX_BODY_<CLASS>``, ``413
request_too_large``) and time budget (``SERVING_BUDGET_<CLASS>``, ``504 request_timeout``) apply as under
gunicorn. The bulkhead does too, but never refuses: Lambda gives an execution environment one request at a time;
Lambda's concurrency per function (reserved concurrency) is the bulkhead between classes here.

Binary bodies: requests with ``isBase64Encoded`` are decoded by apig-wsgi (a REST API with ``*/*`` as binary
media type sends every body so); responses whose content type is not one of :data:`TEXT_CONTENT_TYPES`, or that
carry a ``Content-Encoding``, are base64-encoded with ``isBase64Encoded: true`` (``binary_support=True``, as API
Gateway needs; a REST API must also list ``*/*`` as a binary media type to pass them on).

The client address: apig-wsgi takes ``REMOTE_ADDR`` of a 1.0 event from the first ``X-Forwarded-For`` entry,
which the client writes, and falls back to ``127.0.0.1`` without the header: a client could pick its rate-limit
bucket or pass as loopback, which opens ``/metrics``. So ``REMOTE_ADDR`` is set here from the address API
Gateway saw (``requestContext.identity.sourceIp`` in 1.0, ``requestContext.http.sourceIp`` in 2.0), or left
empty when the event has none (the shared ``unknown`` bucket, never loopback). ``TRUSTED_PROXY_COUNT`` stays 0
behind API Gateway alone.

A cold start (importing this module) does what ``settings/wsgi.py`` and gunicorn's hooks do in a worker, minus
what does not apply: the configuration is loaded and checked (a broken environment prints its one report and
exits: the function's init fails, and Lambda reports it and retries the init on the next invocation), its
warnings are logged once, tracing starts before the application is built (``OTEL_EXPORTER_OTLP_ENDPOINTS``, as
gunicorn's ``post_fork``), Django is set up, the log records get their trace ids. No database or Redis
connection is opened at import: the first request opens them. Metrics are the process's own (single-process
``prometheus_client``: this module imports it before the settings, so no multiprocess directory is made).

What does not run in Lambda (``gunicorn.conf.py``'s hooks): ``post_worker_init`` does not start the database
monitor and the dashboard snapshot publisher at boot, ``on_starting``/``child_exit`` keep no shared metrics
directory. The request path still starts both lazily (``DatabaseRoutingMiddleware`` calls ``monitor_start()`` and
``publisher_start()``), and from then on they run only while an invocation runs: Lambda freezes every thread
between invocations. The monitor tells a thaw from a failure (docs/deploy.md, "What differs"): a deadline that
passed while the environment was frozen is given its time again, and a connection ended during the freeze is
replaced before any node is judged, so the first write after a thaw is served.

A failed dependency, seen from a handler (shown by tests/settings/test_lambda_handlers.py): the database
unreachable (connections refused), ``ops`` ``GET /health`` answers ``503`` JSON with the ``database`` area
failing and a catalog read answers ``503 dependency_unavailable`` with ``Retry-After``, each in well under a
second on a fresh environment, never a traceback (a node that does not answer at all costs the connect
deadline, ``DB_CONNECT_TIMEOUT``); Redis unreachable, every handler serves (the cache and rate limits fall back
to process memory, per execution environment). A handler raises only if Bulwark has a bug outside Django's own
error handling: Lambda then reports the invocation failed and API Gateway answers with its own 5xx.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

# Imported before the settings: prometheus_client's single-process mode (one process per execution environment,
# nothing to share), so settings.base makes no metrics directory (resilience/observability/multiprocess.py).
import prometheus_client  # noqa: F401
from apig_wsgi import DEFAULT_NON_BINARY_CONTENT_TYPE_PREFIXES, make_lambda_handler

from resilience.config.startup import config_or_exit, log_config_warnings
from resilience.serving.classes import ADMIN, AUTH, CATALOG, CHECKOUT, OPS
from resilience.serving.wsgi import ServingMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
_config = config_or_exit()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after the configuration check

from core.wsgi_limits import RequestLimitsMiddleware  # noqa: E402
from resilience.observability.tracing import log_filter_install, tracing_start  # noqa: E402

logger = logging.getLogger("resilience.serving")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# Bodies sent as text, not base64: apig-wsgi's defaults (text/*, JSON) and the other textual types Bulwark serves
# (health+json from /health/live and /health/ready, the OpenAPI schema, static scripts and SVG images).
TEXT_CONTENT_TYPES = (
    *DEFAULT_NON_BINARY_CONTENT_TYPE_PREFIXES,
    "application/health+json",
    "application/vnd.oai.openapi",
    "application/javascript",
    "image/svg+xml",
)

tracing_start(_config)  # before Django builds its handler: the instrumentor adds its middleware (post_fork's job)
#: The one Django application every handler of this process shares (RequestLimitsMiddleware as in settings/wsgi.py).
application: WSGIApplication = RequestLimitsMiddleware(get_wsgi_application())
log_filter_install()  # trace_id/span_id on the log records, once Django's LOGGING is in place (post_worker_init's)
log_config_warnings(_config)


def _source_ip(environ: WSGIEnvironment) -> str:
    """The address API Gateway received the request from ("" when the event has none, e.g. a console test)."""
    context = environ.get("apig_wsgi.request_context")
    if not isinstance(context, dict):
        return ""
    for section in ("http", "identity"):  # 2.0, 1.0
        value = (context.get(section) or {}).get("sourceIp")
        if isinstance(value, str) and value:
            return value
    return ""


class _FromApiGateway:
    """What apig-wsgi leaves to the application: ``REMOTE_ADDR`` from the request context, never from a header the
    client writes (module docstring); ``Set-Cookie`` values without the space Django's WSGI handler puts before
    them (``Morsel.output(header="")``), since a 2.0 response lists them as they are in its ``cookies``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["REMOTE_ADDR"] = _source_ip(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            headers = [(name, value.lstrip() if name.lower() == "set-cookie" else value) for name, value in headers]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.app(environ, start)


class _BudgetCheck:
    """Warns once per class and process when the invocation had less time than the class's budget: Lambda would
    end it before Bulwark can answer ``504 request_timeout`` (the function timeout belongs above the budget)."""

    def __init__(self, traffic_class: str, budget: float) -> None:
        self.traffic_class = traffic_class
        self.budget = budget
        self.warned = False

    def __call__(self, context: Any) -> None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if self.warned or remaining is None:
            return
        seconds = remaining() / 1000
        if seconds < self.budget:
            self.warned = True
            logger.warning(
                "the %s function's timeout is below SERVING_BUDGET_%s: this invocation had %.1fs, the budget is "
                "%gs; raise the function's timeout above the budget",
                self.traffic_class,
                self.traffic_class.upper(),
                seconds,
                self.budget,
                extra={"event": "lambda_timeout_below_budget", "remaining_seconds": seconds, "budget": self.budget},
            )


def _handler(traffic_class: str) -> Handler:
    served = ServingMiddleware(application, serves={traffic_class})
    apig = make_lambda_handler(
        _FromApiGateway(served), binary_support=True, non_binary_content_type_prefixes=TEXT_CONTENT_TYPES
    )
    check = _BudgetCheck(traffic_class, served.budgets[traffic_class])

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        check(context)
        return apig(event, context)

    handler.__name__ = handler.__qualname__ = traffic_class
    handler.serving = served  # type: ignore[attr-defined]
    handler.budget_check = check  # type: ignore[attr-defined]
    handler.__doc__ = (
        f"The Lambda handler of the {traffic_class} traffic class (settings.lambda_handlers.{traffic_class})."
    )
    return handler


catalog = _handler(CATALOG)
auth = _handler(AUTH)
checkout = _handler(CHECKOUT)
admin = _handler(ADMIN)
ops = _handler(OPS)

HANDLERS: dict[str, Handler] = {CATALOG: catalog, AUTH: auth, CHECKOUT: checkout, ADMIN: admin, OPS: ops}
