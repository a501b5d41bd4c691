"""The serving layer as WSGI middleware, outermost around the Django application (``settings/wsgi.py``, and each
Lambda handler in ``settings/lambda_handlers.py``).

For every request, before Django, its middleware or any database or cache work:

1. its traffic class (:mod:`resilience.serving.classes`) goes into the environ (``bulwark.traffic_class``), the
   log context and, as ``X-Traffic-Class``, onto the response, whatever answers it;
2. a path of a class this server does not serve (``SERVING_POOL``, or a Lambda handler's class) -> ``404
   not_found``;
3. a ``Content-Length`` over the class's ``SERVING_MAX_BODY_<CLASS>`` -> ``413 request_too_large``, without
   reading the body (Django reads at most ``Content-Length`` bytes, so a body without one is never read);
4. the class's bulkhead full -> ``503 overloaded`` with ``Retry-After``, at once (:mod:`.bulkheads`);
5. the request's time budget starts (:mod:`.budget`); the bulkhead's place is given back once the server has
   sent the body or closed it (PEP 3333's ``close()``), not when the application returns: until then the thread
   is still busy writing (a slow reader holds it), and the limits count threads.

Refusals are rendered by the one error renderer with a request id (``core.wsgi_limits.wsgi_refuse``). Shedding
is logged at most once every :data:`SHED_LOG_INTERVAL` seconds per class, with the count: a flood of refusals
must not become a flood of log lines (each still has its access-log line). No dependency of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.conf import settings

from core.exceptions import AppError, NotFoundError, RequestTooLargeError
from core.wsgi_limits import wsgi_refuse
from resilience.serving import metrics
from resilience.serving.budget import budget_end, budget_start
from resilience.serving.bulkheads import Bulkheads, Permit, worker_bulkheads
from resilience.serving.classes import HEADER, OPS, TRAFFIC_CLASSES, traffic_class_for
from resilience.serving.context import current_traffic_class
from resilience.serving.exceptions import OverloadedError

logger = logging.getLogger("resilience.serving")

ENVIRON_KEY = "bulwark.traffic_class"
SHED_LOG_INTERVAL = 10.0


class _ShedLog:
    """One warning per class per interval: "shed N <class> requests" (the first one at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(TRAFFIC_CLASSES, 0)
        self._logged_at = dict.fromkeys(TRAFFIC_CLASSES, 0.0)

    def shed(self, traffic_class: str, error: OverloadedError) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending[traffic_class] += 1
            if now - self._logged_at[traffic_class] < SHED_LOG_INTERVAL:
                return
            count, self._pending[traffic_class] = self._pending[traffic_class], 0
            self._logged_at[traffic_class] = now
        logger.warning(
            "shedding %s requests: %d refused (503 overloaded) since the last such line: %s",
            traffic_class,
            count,
            error.message,
            extra={"event": "serving_shed", "traffic_class": traffic_class, "count": count, **error.detail},
        )


class _Released:
    """The application's response, whose bulkhead place is given back when the server closes it or has read it
    to the end, whichever comes first (the thread is busy sending until then)."""

    __slots__ = ("_done", "_result")

    def __init__(self, result: Iterable[bytes], done: Callable[[], None]) -> None:
        self._result = result
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._result
        finally:
            self._done()

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


class ServingMiddleware:
    """``serves``: the classes this server answers (None: ``SERVING_POOL`` with ops, or every class)."""

    def __init__(self, app: WSGIApplication, *, serves: Iterable[str] | None = None) -> None:
        serving = settings.BULWARK_CONFIG.serving
        if serves is None and serving.pool is not None:
            serves = {serving.pool, OPS}
        unknown = set(serves or ()) - set(TRAFFIC_CLASSES)
        if unknown:
            raise ValueError(f"not traffic classes: {', '.join(sorted(unknown))}")
        self.app = app
        self.serves = frozenset(serves) if serves is not None else None
        self.budgets = dict(serving.budgets)
        self.max_bodies = dict(serving.max_bodies)
        self._shed_log = _ShedLog()
        # The per-class metric children, looked up once (``labels()`` takes a lock and builds a key on every call).
        self._in_flight = {c: metrics.IN_FLIGHT.labels(c) for c in TRAFFIC_CLASSES}
        self._duration = {c: metrics.DURATION.labels(c) for c in TRAFFIC_CLASSES}
        self._served = {c: metrics.REQUESTS.labels(c, "served") for c in TRAFFIC_CLASSES}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        traffic_class = traffic_class_for(environ.get("PATH_INFO", ""))
        environ[ENVIRON_KEY] = traffic_class
        class_token = current_traffic_class.set(traffic_class)  # on every log record of this request
        try:
            return self._handle(environ, start_response, traffic_class)
        finally:
            current_traffic_class.reset(class_token)

    def _handle(self, environ: WSGIEnvironment, start_response: StartResponse, traffic_class: str) -> Iterable[bytes]:

        def start(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], object]:
            headers.append((HEADER, traffic_class))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        bulkheads = worker_bulkheads()
        error = self._refusal(environ, traffic_class)
        if error is not None:
            return wsgi_refuse(environ, start, error)
        permit = bulkheads.enter(traffic_class)
        if permit is None:
            overloaded = self._overloaded(bulkheads, traffic_class)
            metrics.REQUESTS.labels(traffic_class, "overloaded").inc()
            self._shed_log.shed(traffic_class, overloaded)
            return wsgi_refuse(environ, start, overloaded, log=False)
        return self._serve(environ, start, traffic_class, permit)

    def _refusal(self, environ: WSGIEnvironment, traffic_class: str) -> AppError | None:
        if self.serves is not None and traffic_class not in self.serves:
            metrics.REQUESTS.labels(traffic_class, "not_in_pool").inc()
            served = ", ".join(name for name in TRAFFIC_CLASSES if name in self.serves)
            return NotFoundError(
                f"This server answers {served} requests only; this path is {traffic_class}.",
                detail={"traffic_class": traffic_class, "served": sorted(self.serves)},
            )
        limit = self.max_bodies[traffic_class]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # as Django reads it: no body
        if length > limit:
            metrics.REQUESTS.labels(traffic_class, "too_large").inc()
            return RequestTooLargeError(
                f"The body is {length} bytes; {traffic_class} requests take at most {limit}.",
                detail={"limit": limit, "length": length, "traffic_class": traffic_class},
            )
        return None

    @staticmethod
    def _overloaded(bulkheads: Bulkheads, traffic_class: str) -> OverloadedError:
        state = bulkheads.classes[traffic_class]
        by_reserve = state.in_flight < state.limit  # the class had room: the shared reserve was full
        limit = bulkheads.shared_limit if by_reserve else state.limit
        return OverloadedError(traffic_class, limit=limit, reserve=by_reserve)

    def _serve(
        self, environ: WSGIEnvironment, start: StartResponse, traffic_class: str, permit: Permit
    ) -> Iterable[bytes]:
        in_flight = self._in_flight[traffic_class]
        in_flight.inc()
        released = False

        def done() -> None:  # once: the server may both read the body to its end and close it
            nonlocal released
            if not released:
                released = True
                in_flight.dec()
                permit.release()

        budget_token = budget_start(self.budgets[traffic_class], traffic_class)
        started = time.perf_counter()
        try:
            result = self.app(environ, start)
        except BaseException:
            done()
            raise
        finally:
            cut = budget_end(budget_token)
        self._duration[traffic_class].observe(time.perf_counter() - started)
        self._served[traffic_class].inc()
        if cut:
            metrics.REQUESTS.labels(traffic_class, "timeout").inc()
        return _Released(result, done)
