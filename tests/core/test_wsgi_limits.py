"""core.wsgi_limits: the WSGI middleware called with environs as gunicorn builds them, no server."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest

from core.request_id import RequestIdLogFilter
from core.wsgi_limits import (
    HEADER_SIZE_EXCEPTIONS,
    MAX_HEADER_COUNT,
    MAX_HEADER_SIZE,
    MAX_HEADERS_TOTAL,
    MAX_REQUEST_LINE,
    RequestLimitsMiddleware,
    request_line_length,
)

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


class App:
    """The wrapped application: records the environs it is called with, answers 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ, start_response):
        self.calls.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body
        self.status_code = int(status.split()[0])
        self.headers = {name.lower(): value for name, value in headers}

    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/json"
        assert self.headers["content-length"] == str(len(self.body))
        error = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "detail", "request_id"}
        assert error["request_id"] == self.headers["x-request-id"]
        return error


def environ(
    path: str = "/api/products/",
    query: str = "",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    raw_uri: str | None = "",
) -> dict[str, Any]:
    """A WSGI environ as gunicorn makes it; ``raw_uri=None`` leaves RAW_URI out (other servers)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1:8000",
    }
    if raw_uri is not None:
        env["RAW_URI"] = raw_uri or (path + (f"?{query}" if query else ""))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return env


def call(env: dict[str, Any]) -> tuple[App, Answer]:
    app = App()
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status, headers, exc_info=None):
        seen.append((status, headers))

    body = b"".join(RequestLimitsMiddleware(app)(env, start_response))
    ((status, headers),) = seen
    return app, Answer(status, headers, body)


def query_of_line_length(length: int, path: str = "/api/products/") -> str:
    """A ``q=...`` query that makes the request line exactly ``length`` long."""
    fixed = request_line_length(environ(path, "q="))
    return "q=" + "a" * (length - fixed)


# ---- passing through ---------------------------------------------------------------------------------------


def test_a_request_within_the_limits_reaches_the_application_untouched() -> None:
    env = environ(headers={"Authorization": "Bearer abc", "Accept": "application/json"})
    app, answer = call(env)
    assert (answer.status, answer.body) == ("200 OK", b"served")
    assert app.calls == [env]


def test_each_limit_is_inclusive() -> None:
    query = query_of_line_length(MAX_REQUEST_LINE)
    at_limit = {f"X-H{i}": "v" for i in range(MAX_HEADER_COUNT - 1)}  # and Host
    one_header = {"X-Big": "v" * (MAX_HEADER_SIZE - len("X-Big"))}
    for env in (environ(query=query), environ(headers=at_limit), environ(headers=one_header)):
        app, answer = call(env)
        assert answer.status_code == 200 and len(app.calls) == 1


def test_a_long_bearer_token_passes_for_the_auth_layer_to_answer() -> None:
    token = "x" * 20_000  # over resilience.auth's 8 KB: its 401 token_not_valid too_large says more than a 431
    assert len("Authorization") + len(f"Bearer {token}") > MAX_HEADER_SIZE
    app, answer = call(environ(headers={"Authorization": f"Bearer {token}"}))
    assert answer.status_code == 200 and len(app.calls) == 1


# ---- 414 uri_too_long --------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_length", [5_000, 20_000, 2_000_000])
def test_a_long_query_is_a_json_414(q_length: int) -> None:
    app, answer = call(environ(query="q=" + "a" * q_length))
    assert not app.calls
    assert answer.status == "414 Request-URI Too Long"
    error = answer.error()
    assert error["code"] == "uri_too_long"
    assert error["detail"] == {"limit": MAX_REQUEST_LINE, "length": len("GET /api/products/?q= HTTP/1.1") + q_length}
    assert REQUEST_ID.match(error["request_id"])


def test_one_byte_over_the_request_line_is_a_414() -> None:
    _, answer = call(environ(query=query_of_line_length(MAX_REQUEST_LINE + 1)))
    assert answer.status_code == 414 and answer.error()["detail"]["length"] == MAX_REQUEST_LINE + 1


def test_the_request_line_counts_the_raw_target_as_sent() -> None:
    # gunicorn's PATH_INFO is percent-decoded: RAW_URI is what the client sent, three bytes for each %xx.
    path = "/api/products/" + "é" * 1_500
    raw = "/api/products/" + "%C3%A9" * 1_500
    wsgi_path = path.encode("utf-8").decode("latin-1")
    assert len(wsgi_path) < MAX_REQUEST_LINE < len(raw)
    _, answer = call(environ(wsgi_path, raw_uri=raw))
    assert answer.status_code == 414


def test_without_raw_uri_the_request_line_is_rebuilt() -> None:
    path = ("/api/products/" + "é" * 1_500).encode("utf-8").decode("latin-1")
    _, answer = call(environ(path, raw_uri=None))
    assert answer.status_code == 414
    assert answer.error()["detail"]["length"] == len("GET  HTTP/1.1") + len("/api/products/") + 6 * 1_500

    env = environ(query="q=atlas", raw_uri=None)
    assert request_line_length(env) == len("GET /api/products/?q=atlas HTTP/1.1")
    env = environ(query="q=atlas", raw_uri=None) | {"REQUEST_URI": "/api/products/?q=atlas&page=2"}
    assert request_line_length(env) == len("GET /api/products/?q=atlas&page=2 HTTP/1.1")


# ---- 431 headers_too_large ---------------------------------------------------------------------------------


def test_too_many_headers_is_a_json_431() -> None:
    app, answer = call(environ(headers={f"X-H{i}": "v" for i in range(150)}))
    assert not app.calls
    assert answer.status == "431 Request Header Fields Too Large"
    error = answer.error()
    assert error["code"] == "headers_too_large"
    assert error["detail"] == {"reason": "too_many", "limit": MAX_HEADER_COUNT, "count": 151}  # and Host


def test_one_header_over_its_limit_is_a_json_431_naming_it() -> None:
    app, answer = call(environ(headers={"X-Padding": "p" * 20 * 1024}))
    assert not app.calls and answer.status_code == 431
    assert answer.error()["detail"] == {
        "reason": "header_too_large",
        "header": "X-Padding",
        "limit": MAX_HEADER_SIZE,
        "length": len("X-Padding") + 20 * 1024,
    }
    assert b"ppp" not in answer.body  # a header's value is never echoed


def test_content_type_and_length_count_as_headers() -> None:
    _, answer = call(environ(method="POST", headers={"Content-Type": "application/json" + " " * MAX_HEADER_SIZE}))
    assert answer.status_code == 431 and answer.error()["detail"]["header"] == "Content-Type"


def test_authorization_has_its_own_larger_limit() -> None:
    limit = HEADER_SIZE_EXCEPTIONS["HTTP_AUTHORIZATION"]
    _, answer = call(environ(headers={"Authorization": "Bearer " + "x" * limit}))
    assert answer.status_code == 431
    assert answer.error()["detail"]["header"] == "Authorization"
    assert answer.error()["detail"]["limit"] == limit


def test_headers_over_the_total_are_a_json_431() -> None:
    each = MAX_HEADER_SIZE - 10
    headers = {f"X-H{i}": "v" * (each - len(f"X-H{i}")) for i in range(MAX_HEADERS_TOTAL // each + 1)}
    app, answer = call(environ(headers=headers))
    assert not app.calls and answer.status_code == 431
    detail = answer.error()["detail"]
    assert detail["reason"] == "total_too_large" and detail["limit"] == MAX_HEADERS_TOTAL
    assert detail["length"] > MAX_HEADERS_TOTAL


# ---- 400 bad_request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/api/products/%FF/", "path_not_utf8"),
        ("/api/products/%C3/", "path_not_utf8"),
        ("/api/products/%00/", "path_control_character"),
        ("/api/products/a%0Ab/", "path_control_character"),
    ],
)
def test_a_malformed_path_is_a_json_400(raw_path: str, reason: str) -> None:
    path = unquote_to_bytes(raw_path).decode("latin-1")  # gunicorn's PATH_INFO
    app, answer = call(environ(path, raw_uri=raw_path))
    assert not app.calls
    assert answer.status == "400 Bad Request"
    error = answer.error()
    assert (error["code"], error["detail"]) == ("bad_request", {"reason": reason})


def test_a_utf8_path_is_not_malformed() -> None:
    path = "/api/products/café/".encode().decode("latin-1")
    app, answer = call(environ(path, raw_uri="/api/products/caf%C3%A9/"))
    assert answer.status_code == 200 and len(app.calls) == 1


# ---- how the refusal is answered ---------------------------------------------------------------------------


def test_a_sane_client_request_id_is_kept_an_insane_one_replaced() -> None:
    _, answer = call(environ(query="q=" + "a" * 5_000, headers={"X-Request-ID": "client-id.42"}))
    assert answer.error()["request_id"] == "client-id.42"
    _, answer = call(environ(query="q=" + "a" * 5_000, headers={"X-Request-ID": "bad id"}))
    assert REQUEST_ID.match(answer.error()["request_id"])


def test_a_browser_outside_the_api_gets_the_message_as_text_as_for_every_error() -> None:
    env = environ("/admin/", "q=" + "a" * 5_000, headers={"Accept": "text/html,*/*"})
    _, answer = call(env)
    assert answer.status_code == 414
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.body.startswith(b"The request line is over")
    assert REQUEST_ID.match(answer.headers["x-request-id"])
    # ... and a client outside the API that asks for JSON gets JSON.
    _, answer = call(environ("/admin/", "q=" + "a" * 5_000, headers={"Accept": "application/json"}))
    assert answer.error()["code"] == "uri_too_long"


def test_a_refusal_is_logged_with_its_request_id_and_without_header_values(caplog) -> None:
    caplog.handler.addFilter(RequestIdLogFilter())  # as settings.LOGGING's console handler has it
    with caplog.at_level(logging.WARNING, logger="core.wsgi_limits"):
        _, answer = call(environ(headers={"X-Request-ID": "rid-1", "X-Secret": "s3cr3t" * 4_000}))
    (record,) = caplog.records
    assert "431 headers_too_large" in record.getMessage()
    assert "s3cr3t" not in record.getMessage()
    assert record.request_id == "rid-1" == answer.error()["request_id"]
