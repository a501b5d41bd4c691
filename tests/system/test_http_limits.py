"""Request-line and header limits through real gunicorn: Bulwark's JSON errors, never gunicorn's HTML pages.

gunicorn.conf.py sets gunicorn's own limits out of the way; core/wsgi_limits.py answers what is over Bulwark's.
Only past gunicorn's absolute caps (1 MiB of request line or of headers) does gunicorn answer itself.
"""

from __future__ import annotations

import ast
import http.client
import re
import socket
from pathlib import Path

import pytest
import requests

from tests.system.test_token_limits import oversized_token

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def gunicorn_setting(name: str) -> int:
    """A constant of gunicorn.conf.py, read without running it (it patches gunicorn when run)."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise LookupError(name)


def json_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert REQUEST_ID.match(error["request_id"])
    return error


@pytest.mark.parametrize("q_length", [5_000, 20_000])
def test_a_long_query_is_a_json_414(server, q_length: int) -> None:
    # 5 000 was gunicorn's HTML 414 (limit_request_line 4094); 20 000 is past any value but 0 gunicorn takes.
    response = requests.get(f"{server.url}/api/products/", params={"q": "a" * q_length}, timeout=10)
    error = json_error(response, 414, "uri_too_long")
    assert error["detail"]["length"] > error["detail"]["limit"]


def test_150_headers_are_a_json_431(server) -> None:
    headers = {f"X-Extra-{i}": "v" for i in range(150)}
    response = requests.get(f"{server.url}/api/products/", headers=headers, timeout=10)
    error = json_error(response, 431, "headers_too_large")
    assert error["detail"]["reason"] == "too_many"


def test_one_20_kib_header_is_a_json_431(server) -> None:
    response = requests.get(f"{server.url}/api/products/", headers={"X-Padding": "p" * 20 * 1024}, timeout=10)
    error = json_error(response, 431, "headers_too_large")
    assert (error["detail"]["reason"], error["detail"]["header"]) == ("header_too_large", "X-Padding")


def test_a_9000_character_bearer_token_still_reaches_the_auth_layer(server) -> None:
    token = oversized_token(9_000)
    response = requests.get(f"{server.url}/api/auth/me/", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    error = json_error(response, 401, "token_not_valid")
    assert error["detail"] == {"reason": "too_large"}


def test_a_path_that_is_not_utf8_is_a_json_400(server) -> None:
    response = requests.get(f"{server.url}/api/products/%FF/", timeout=10)
    error = json_error(response, 400, "bad_request")
    assert error["detail"] == {"reason": "path_not_utf8"}


def test_the_connection_serves_on_after_a_refusal(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/api/products/?q=" + "a" * 20_000, headers={"X-Request-ID": "mine-1"})
        refused = conn.getresponse()
        assert (refused.status, refused.getheader("X-Request-ID")) == (414, "mine-1")
        refused.read()
        conn.request("GET", "/api/products/?q=atlas")
        served = conn.getresponse()
        assert served.status == 200
        served.read()
    finally:
        conn.close()


def raw_exchange(server, data: bytes) -> bytes:
    """Send ``data`` (a head gunicorn must refuse once it has read all of it) and read the answer to EOF.

    The connection is left open for writing: without its cap gunicorn would wait for the rest of the head,
    and the read would time out instead of returning its refusal.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_line_past_gunicorns_cap_is_refused_by_gunicorn(server) -> None:
    cap = gunicorn_setting("GUNICORN_MAX_REQUEST_LINE")
    # gunicorn refuses once it holds more than cap + CRLF bytes of line: send exactly one more than that.
    line = b"GET /api/products/?q=" + b"a" * (cap + 3 - len(b"GET /api/products/?q="))
    answer = raw_exchange(server, line)
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
    assert b"Content-Type: text/html" in answer  # gunicorn's own page: the one case left to it


def test_headers_past_gunicorns_cap_are_refused_by_gunicorn(server) -> None:
    cap = gunicorn_setting("GUNICORN_MAX_HEAD")
    head = b"GET /api/products/ HTTP/1.1\r\n"
    answer = raw_exchange(server, head + b"X-Padding: " + b"p" * (cap + 1 - len(b"X-Padding: ")))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"Content-Type: text/html" in answer
