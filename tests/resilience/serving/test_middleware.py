"""The serving middleware around the real Django application, called as a WSGI server calls it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from wsgiref.util import setup_testing_defaults

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections

from core.wsgi_limits import RequestLimitsMiddleware
from resilience.observability.logs import RequestContextFilter
from resilience.serving import metrics
from resilience.serving.bulkheads import worker_bulkheads
from resilience.serving.context import current_traffic_class
from resilience.serving.wsgi import ServingMiddleware


class Unreadable(io.BytesIO):
    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read")


@pytest.fixture
def django_app() -> Iterator[WSGIHandler]:
    # As Django's test client does: a request must not close the test's connections (they hold its transaction).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield RequestLimitsMiddleware(WSGIHandler())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def call(app, path: str, *, method: str = "GET", body: bytes = b"", environ: dict | None = None):
    env: dict = {}
    setup_testing_defaults(env)
    env.update(
        PATH_INFO=path,
        REQUEST_METHOD=method,
        SERVER_NAME="testserver",
        HTTP_HOST="testserver",
        CONTENT_LENGTH=str(len(body)),
        CONTENT_TYPE="application/json",
    )
    env["wsgi.input"] = io.BytesIO(body)
    env.update(environ or {})
    captured: dict = {}

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    result = app(env, start_response)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return captured["status"], captured["headers"], content


def count(traffic_class: str, outcome: str) -> float:
    return metrics.REQUESTS.labels(traffic_class, outcome)._value.get()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "traffic_class"),
    [("/api/products/", "catalog"), ("/api/cart/", "checkout"), ("/health/live", "ops"), ("/nowhere", "catalog")],
)
def test_every_response_names_its_class(django_app, path, traffic_class):
    served = count(traffic_class, "served")
    status, headers, _ = call(ServingMiddleware(django_app), path)
    assert headers["X-Traffic-Class"] == traffic_class
    assert headers["X-Request-ID"]
    assert status < 500
    assert count(traffic_class, "served") == served + 1


def test_a_body_over_the_class_limit_is_refused_without_reading_it(django_app, settings):
    limit = settings.BULWARK_CONFIG.serving.max_bodies["auth"]
    too_large = count("auth", "too_large")
    status, headers, content = call(
        ServingMiddleware(django_app),
        "/api/auth/token/",
        method="POST",
        environ={"CONTENT_LENGTH": str(limit + 1), "wsgi.input": Unreadable()},
    )
    error = json.loads(content)["error"]
    assert status == 413 and error["code"] == "request_too_large"
    assert error["detail"] == {"limit": limit, "length": limit + 1, "traffic_class": "auth"}
    assert headers["X-Traffic-Class"] == "auth" and error["request_id"] == headers["X-Request-ID"]
    assert count("auth", "too_large") == too_large + 1


@pytest.mark.django_db
def test_a_body_within_the_limit_reaches_django(django_app):
    body = json.dumps({"username": "nobody", "password": "x" * 100}).encode()
    status, _, content = call(ServingMiddleware(django_app), "/api/auth/token/", method="POST", body=body)
    assert status == 401 and json.loads(content)["error"]["code"] == "invalid_credentials"


@pytest.mark.django_db
def test_a_full_bulkhead_answers_503_overloaded_at_once_and_other_classes_still_serve(django_app):
    bulkheads = worker_bulkheads()
    limit = bulkheads.classes["catalog"].limit
    held = [bulkheads.enter("catalog") for _ in range(limit)]
    overloaded = count("catalog", "overloaded")
    try:
        assert all(held)
        status, headers, content = call(ServingMiddleware(django_app), "/api/products/")
        error = json.loads(content)["error"]
        assert status == 503 and error["code"] == "overloaded"
        assert error["detail"] == {"traffic_class": "catalog", "limit": limit, "reason": "class_limit"}
        assert headers["Retry-After"] == "1" and headers["X-Traffic-Class"] == "catalog"
        assert count("catalog", "overloaded") == overloaded + 1
        status, _, _ = call(ServingMiddleware(django_app), "/health/live")
        assert status == 200
        status, _, _ = call(ServingMiddleware(django_app), "/api/auth/me/")
        assert status == 401  # auth has its own bulkhead: not refused for catalog's
    finally:
        for permit in held:
            permit.release()
    assert bulkheads.classes["catalog"].in_flight == 0


@pytest.mark.django_db
def test_a_served_request_gives_its_place_back(django_app):
    bulkheads = worker_bulkheads()
    for _ in range(bulkheads.classes["catalog"].limit + 3):
        status, _, _ = call(ServingMiddleware(django_app), "/api/categories/")
        assert status == 200
    assert bulkheads.classes["catalog"].in_flight == 0 and bulkheads.shared_in_flight == 0


def test_a_streamed_body_holds_its_place_until_it_is_sent():
    bulkheads = worker_bulkheads()
    seen: list[int] = []

    def streaming_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            seen.append(bulkheads.classes["catalog"].in_flight)
            yield b"chunk"

        return body()

    status, headers, content = call(ServingMiddleware(streaming_app), "/static/big.bin")
    assert (status, content, headers["X-Traffic-Class"]) == (200, b"chunk", "catalog")
    assert seen == [1]
    assert bulkheads.classes["catalog"].in_flight == 0


@pytest.mark.django_db
def test_a_response_in_memory_holds_its_place_until_the_server_has_written_it(django_app):
    """The limits count threads: one still writing a body out (a slow reader) is not free yet."""
    bulkheads = worker_bulkheads()
    env: dict = {}
    setup_testing_defaults(env)
    env.update(PATH_INFO="/api/categories/", SERVER_NAME="testserver", HTTP_HOST="testserver")
    gauge = metrics.IN_FLIGHT.labels("catalog")
    before = gauge._value.get()
    result = ServingMiddleware(django_app)(env, lambda status, headers, exc_info=None: None)
    assert bulkheads.classes["catalog"].in_flight == 1  # returned, not yet written
    body = b"".join(result)  # the server writes it out ...
    assert body.startswith(b"[") or body.startswith(b"{")
    result.close()  # ... and closes it (PEP 3333): both give the place back, once
    assert bulkheads.classes["catalog"].in_flight == 0 and bulkheads.shared_in_flight == 0
    assert gauge._value.get() == before


def test_a_response_closed_unread_gives_its_place_back():
    """A client gone before the body was sent: the server closes the response without reading it."""
    bulkheads = worker_bulkheads()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"never sent"]

    env: dict = {}
    setup_testing_defaults(env)
    env.update(PATH_INFO="/api/products/")
    result = ServingMiddleware(app)(env, lambda status, headers, exc_info=None: None)
    assert bulkheads.classes["catalog"].in_flight == 1
    result.close()
    assert bulkheads.classes["catalog"].in_flight == 0


def test_an_application_error_gives_the_place_back():
    bulkheads = worker_bulkheads()

    def failing_app(environ, start_response):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        call(ServingMiddleware(failing_app), "/api/products/")
    assert bulkheads.classes["catalog"].in_flight == 0


@pytest.mark.django_db
def test_a_pool_answers_its_class_and_ops_and_404_for_the_rest(django_app):
    pool = ServingMiddleware(django_app, serves={"checkout", "ops"})
    status, headers, content = call(pool, "/api/products/")
    error = json.loads(content)["error"]
    assert status == 404 and error["code"] == "not_found"
    assert error["detail"] == {"traffic_class": "catalog", "served": ["checkout", "ops"]}
    assert headers["X-Traffic-Class"] == "catalog"
    assert call(pool, "/health/live")[0] == 200
    assert call(pool, "/api/cart/")[0] == 401  # served: the cart needs a token


def test_serving_pool_from_the_configuration(settings):
    import dataclasses

    config = settings.BULWARK_CONFIG
    settings.BULWARK_CONFIG = dataclasses.replace(config, serving=dataclasses.replace(config.serving, pool="auth"))
    assert ServingMiddleware(lambda environ, start_response: []).serves == {"auth", "ops"}


def test_unknown_classes_are_refused_at_construction():
    with pytest.raises(ValueError, match="not traffic classes: shipping"):
        ServingMiddleware(lambda environ, start_response: [], serves={"shipping"})


def test_the_class_is_on_every_log_record_of_the_request():
    records: list[logging.LogRecord] = []

    def logging_app(environ, start_response):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", None, None)
        RequestContextFilter().filter(record)
        records.append(record)
        start_response("200 OK", [])
        return [b""]

    call(ServingMiddleware(logging_app), "/api/orders/")
    assert records[0].traffic_class == "checkout"
    assert current_traffic_class.get() is None
