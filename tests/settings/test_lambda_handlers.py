"""The Lambda handlers (``settings/lambda_handlers.py``) invoked as AWS Lambda invokes them: with API Gateway
events shaped as AWS documents them (REST API, payload 1.0; HTTP API, payload 2.0), against the real test
database and Redis. Nothing is mocked but the Lambda context object.

In-process tests call the handlers the test process imported (pytest-django's PostgreSQL test database). The
cold start, the unreachable database and Redis, and the freeze between invocations run the handlers in a fresh
subprocess (:data:`RUNNER`) with the test run's environment and the production settings module, which imports
``settings.lambda_handlers`` and answers one event per line on stdin.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import pytest
from django.contrib.staticfiles import finders
from django.core import signals
from django.db import close_old_connections, connections

from resilience.auth.tokens import tokens_for_user
from resilience.serving.classes import ADMIN, AUTH, CATALOG, CHECKOUT, OPS, TRAFFIC_CLASSES
from settings import lambda_handlers
from tests.factories import TEST_PASSWORD, ProductFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
# The host and ids of AWS's own examples: an execute-api domain, a regional API, one account.
API_ID = "r3pmxmplak"
HOST = f"{API_ID}.execute-api.us-east-2.amazonaws.com"
ACCOUNT = "123456789012"
CLIENT_IP = "203.0.113.25"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
PNG = "drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png"  # a binary file Bulwark serves under /static/
FORMATS = ("v1", "v2")
COLD_START_BOUND = 60.0  # seconds: generous; the measured time is printed


class LambdaContext:
    """The one stand-in: what the Lambda runtime passes as ``context`` (the attributes Bulwark reads)."""

    def __init__(self, function_name: str = "bulwark-catalog", timeout: float = 60.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-2:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = "1024"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/12/02/[$LATEST]0123456789abcdef0123456789abcdef"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# --- events, as API Gateway sends them -------------------------------------------------------------------------


def _request_time() -> tuple[str, int]:
    now = time.time()
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), int(now * 1000)


def http_api_event(
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
    body: bytes | str | None = None,
    base64_body: bool = False,
    source_ip: str = CLIENT_IP,
) -> dict[str, Any]:
    """An HTTP API event, payload format 2.0, ``$default`` route and stage (the shape of AWS's documented example:
    lowercase header names, cookies in their own list, absent fields left out as API Gateway leaves them)."""
    when, epoch = _request_time()
    request_id = base64.b32encode(uuid.uuid4().bytes)[:14].decode()
    all_headers = {
        "accept": "application/json",
        "accept-encoding": "gzip, deflate, br",
        "host": HOST,
        "user-agent": USER_AGENT,
        "x-amzn-trace-id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        "x-forwarded-for": source_ip,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    encoded = body.encode() if isinstance(body, str) else body
    if encoded is not None:
        all_headers["content-length"] = str(len(encoded))
    all_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": quote(path),
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": HOST,
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": USER_AGENT,
            },
            "requestId": f"{request_id}=",
            "routeKey": "$default",
            "stage": "$default",
            "time": when,
            "timeEpoch": epoch,
        },
        "isBase64Encoded": base64_body,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        params: dict[str, list[str]] = {}
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            params.setdefault(name, []).append(value)
        event["queryStringParameters"] = {name: ",".join(values) for name, values in params.items()}
    if encoded is not None:
        event["body"] = base64.b64encode(encoded).decode() if base64_body else encoded.decode()
    return event


def rest_api_event(
    method: str,
    path: str,
    *,
    query: dict[str, list[str]] | None = None,
    headers: dict[str, list[str]] | None = None,
    body: bytes | str | None = None,
    base64_body: bool = False,
    source_ip: str = CLIENT_IP,
) -> dict[str, Any]:
    """A REST API event (payload 1.0) from a ``/{proxy+}`` resource on stage ``prod`` of an edge-optimized API:
    the shape of AWS's documented example, single- and multi-value headers and query parameters both present, the
    client address in ``requestContext.identity.sourceIp`` and appended to ``X-Forwarded-For``."""
    when, epoch = _request_time()
    multi_headers: dict[str, list[str]] = {
        "Accept": ["application/json"],
        "Accept-Encoding": ["gzip, deflate, br"],
        "CloudFront-Forwarded-Proto": ["https"],
        "CloudFront-Is-Desktop-Viewer": ["true"],
        "CloudFront-Is-Mobile-Viewer": ["false"],
        "CloudFront-Viewer-Country": ["DE"],
        "Host": [HOST],
        "User-Agent": [USER_AGENT],
        "Via": ["2.0 a3650115c5e21e2b5d133ce84464bea3.cloudfront.net (CloudFront)"],
        "X-Amz-Cf-Id": ["0nDeiXnReyHYCkv8cc150MWCFCLFPbJoTs1mexDuKe2WJwK5ANgv2A=="],
        "X-Amzn-Trace-Id": [f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"],
        "X-Forwarded-For": [f"{source_ip}, 130.176.89.142"],
        "X-Forwarded-Port": ["443"],
        "X-Forwarded-Proto": ["https"],
    }
    encoded = body.encode() if isinstance(body, str) else body
    if encoded is not None:
        multi_headers["Content-Length"] = [str(len(encoded))]
    multi_headers.update(headers or {})
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "2gxmpl",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": "JJbxmplHYosFVYQ=",
            "requestTime": when,
            "path": f"/prod{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": "prod",
            "domainPrefix": API_ID,
            "requestTimeEpoch": epoch,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": USER_AGENT,
                "user": None,
            },
            "domainName": HOST,
            "apiId": API_ID,
        },
        "body": (base64.b64encode(encoded).decode() if base64_body else encoded.decode())
        if encoded is not None
        else None,
        "isBase64Encoded": base64_body,
    }


def event_for(
    fmt: str,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
    body: bytes | str | None = None,
    base64_body: bool = False,
    source_ip: str = CLIENT_IP,
) -> dict[str, Any]:
    """The same request as either event format (``fmt`` ``v1``: REST API; ``v2``: HTTP API)."""
    if fmt == "v2":
        return http_api_event(
            method,
            path,
            query=urlencode(query or {}),
            headers=headers,
            cookies=cookies,
            body=body,
            base64_body=base64_body,
            source_ip=source_ip,
        )
    multi = {name: [value] for name, value in (headers or {}).items()}
    if cookies:
        multi["Cookie"] = ["; ".join(cookies)]
    return rest_api_event(
        method,
        path,
        query={name: [value] for name, value in (query or {}).items()},
        headers=multi,
        body=body,
        base64_body=base64_body,
        source_ip=source_ip,
    )


def json_body(fmt: str, method: str, path: str, data: object, *, token: str | None = None, **kwargs: Any) -> dict:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return event_for(fmt, method, path, headers=headers, body=json.dumps(data), **kwargs)


# --- responses, as API Gateway reads them ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]  # lowercase names
    cookies: list[str]  # Set-Cookie values
    body: bytes
    base64: bool
    raw: dict[str, Any]

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return ",".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def cookie(self, name: str) -> str | None:
        for line in self.cookies:
            key, _, rest = line.partition("=")
            if key == name:
                return rest.split(";", 1)[0]
        return None


def reply_of(response: dict[str, Any]) -> Reply:
    """Read a handler's response as API Gateway does: ``multiValueHeaders`` (1.0) or ``headers`` + ``cookies``
    (2.0); a base64 body decoded."""
    headers: dict[str, list[str]] = {}
    cookies: list[str] = list(response.get("cookies") or [])
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(name.lower(), []).extend(values)
    for name, value in (response.get("headers") or {}).items():
        headers.setdefault(name.lower(), []).append(value)
    cookies += headers.pop("set-cookie", [])
    assert isinstance(response["body"], str)
    encoded = response.get("isBase64Encoded", False)
    body = base64.b64decode(response["body"]) if encoded else response["body"].encode()
    return Reply(response["statusCode"], headers, cookies, body, encoded, response)


def invoke(traffic_class: str, event: dict[str, Any], context: LambdaContext | None = None) -> Reply:
    handler = getattr(lambda_handlers, traffic_class)
    response = handler(event, context or LambdaContext(f"bulwark-{traffic_class}"))
    json.dumps(response)  # what Lambda does with it: it must serialize
    return reply_of(response)


def assert_error(reply: Reply, status: int, code: str, traffic_class: str) -> dict:
    assert reply.status == status, reply.body[:500]
    assert reply.header("Content-Type") == "application/json", reply.headers
    assert reply.header("X-Traffic-Class") == traffic_class
    assert not reply.base64
    error = reply.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == reply.header("X-Request-ID")
    return error


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _api_gateway_host(settings) -> None:
    """The API's execute-api domain is one of the hosts served (as ALLOWED_HOSTS says in a deployment)."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, HOST]


@pytest.fixture
def in_process(db) -> Iterator[None]:
    """As Django's test client does: a request must not close the connection the test's transaction is on
    (the handler calls the WSGI application, which closes old connections at each request's start and end)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _token(user) -> str:
    return tokens_for_user(user)["access"]


# --- the module -----------------------------------------------------------------------------------------------


def test_one_handler_per_traffic_class_over_one_application() -> None:
    assert set(lambda_handlers.HANDLERS) == set(TRAFFIC_CLASSES)
    for name in TRAFFIC_CLASSES:
        handler = getattr(lambda_handlers, name)
        assert callable(handler) and handler.__name__ == name
        assert lambda_handlers.HANDLERS[name] is handler
        assert handler.serving.serves == frozenset({name})  # strict: its class only, whatever SERVING_POOL says
        assert handler.serving.app is lambda_handlers.application  # one Django application for all five


# --- each handler serves its own class ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_catalog_serves_a_product_page(in_process, fmt: str) -> None:
    ProductFactory.create_batch(3)
    reply = invoke(CATALOG, event_for(fmt, "GET", "/api/products/", query={"page_size": "2"}))
    assert reply.status == 200, reply.body[:500]
    assert reply.header("X-Traffic-Class") == CATALOG
    assert reply.header("Content-Type") == "application/json"
    assert not reply.base64
    page = reply.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3 and len(page["results"]) == 2 and page["previous"] is None
    # The query string reached Django, and the public URL is the API's (host and scheme from API Gateway).
    assert page["next"] == f"https://{HOST}/api/products/?page=2&page_size=2"


@pytest.mark.parametrize("fmt", FORMATS)
def test_auth_registers_and_issues_tokens(in_process, fmt: str) -> None:
    username = f"ada-{fmt}"
    registered = invoke(
        AUTH,
        json_body(
            fmt,
            "POST",
            "/api/auth/register/",
            {"username": username, "email": f"{username}@example.com", "password": TEST_PASSWORD},
        ),
    )
    assert registered.status == 201, registered.body
    assert registered.header("X-Traffic-Class") == AUTH
    assert registered.json()["username"] == username

    tokens = invoke(AUTH, json_body(fmt, "POST", "/api/auth/token/", {"username": username, "password": TEST_PASSWORD}))
    assert tokens.status == 200, tokens.body
    assert tokens.header("X-Traffic-Class") == AUTH
    assert set(tokens.json()) >= {"access", "refresh"}

    me = invoke(
        AUTH, event_for(fmt, "GET", "/api/auth/me/", headers={"Authorization": f"Bearer {tokens.json()['access']}"})
    )
    assert me.status == 200, me.body
    assert me.json()["username"] == username


@pytest.mark.parametrize("fmt", FORMATS)
def test_checkout_adds_to_the_cart_and_places_an_order(in_process, fmt: str) -> None:
    user, product = UserFactory(), ProductFactory(stock=5)
    token = _token(user)
    added = invoke(
        CHECKOUT, json_body(fmt, "POST", "/api/cart/items/", {"product_id": product.id, "quantity": 2}, token=token)
    )
    assert added.status == 201, added.body
    assert added.header("X-Traffic-Class") == CHECKOUT
    assert added.json()["items"][0]["quantity"] == 2

    key = str(uuid.uuid4())
    order = invoke(CHECKOUT, json_body(fmt, "POST", "/api/orders/", {}, token=token, headers={"Idempotency-Key": key}))
    assert order.status == 201, order.body
    assert order.header("X-Traffic-Class") == CHECKOUT
    placed = order.json()
    assert [item["quantity"] for item in placed["items"]] == [2]
    assert placed["status"] in {"paid", "pending_payment"}
    product.refresh_from_db()
    assert product.stock == 3

    replay = invoke(CHECKOUT, json_body(fmt, "POST", "/api/orders/", {}, token=token, headers={"Idempotency-Key": key}))
    assert replay.status == 201 and replay.header("Idempotent-Replayed") == "true"
    assert replay.json()["id"] == placed["id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_admin_serves_its_login_page(in_process, fmt: str) -> None:
    reply = invoke(ADMIN, event_for(fmt, "GET", "/admin/login/", headers={"Accept": "text/html"}))
    assert reply.status == 200, reply.body[:500]
    assert reply.header("X-Traffic-Class") == ADMIN
    assert reply.header("Content-Type").startswith("text/html")
    assert not reply.base64
    assert b"<title>Log in | Bulwark admin</title>" in reply.body


@pytest.mark.parametrize("fmt", FORMATS)
def test_ops_serves_health_and_the_jwks(in_process, fmt: str) -> None:
    live = invoke(OPS, event_for(fmt, "GET", "/health/live"))
    assert live.status == 200 and live.json()["status"] == "pass"
    assert live.header("X-Traffic-Class") == OPS
    assert live.header("Content-Type") == "application/health+json"
    assert not live.base64  # a JSON type: sent as text

    health = invoke(OPS, event_for(fmt, "GET", "/health"))
    assert health.header("X-Traffic-Class") == OPS
    assert health.status == 200, health.body[:500]  # 503 only when no database node answers
    assert health.json()["spofs"]["status"]["database"]["status"] == "pass"

    jwks = invoke(OPS, event_for(fmt, "GET", "/.well-known/jwks.json"))
    assert jwks.status == 200, jwks.body
    assert jwks.header("X-Traffic-Class") == OPS
    assert isinstance(jwks.json()["keys"], list)


# --- a path of another class: 404 -----------------------------------------------------------------------------

PATHS = {
    CATALOG: ("GET", "/api/products/"),
    AUTH: ("POST", "/api/auth/token/"),
    CHECKOUT: ("GET", "/api/cart/"),
    ADMIN: ("GET", "/admin/login/"),
    OPS: ("GET", "/health"),
}
ELSEWHERE = [
    (handler, path_class) for handler in TRAFFIC_CLASSES for path_class in TRAFFIC_CLASSES if handler != path_class
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("handler", "path_class"), ELSEWHERE)
def test_a_handler_answers_404_for_another_class(in_process, fmt: str, handler: str, path_class: str) -> None:
    method, path = PATHS[path_class]
    reply = invoke(handler, event_for(fmt, method, path))
    error = assert_error(reply, 404, "not_found", path_class)
    assert error["detail"] == {"traffic_class": path_class, "served": [handler]}


def test_unknown_paths_are_catalog_and_ops_is_strict_too(in_process) -> None:
    unknown = invoke(CATALOG, event_for("v2", "GET", "/no/such/page"))
    assert unknown.status == 404 and unknown.header("X-Traffic-Class") == CATALOG
    assert unknown.json()["error"]["code"] == "not_found"
    assert "served" not in (unknown.json()["error"]["detail"] or {})  # Django's 404, not the serving layer's

    elsewhere = invoke(OPS, event_for("v2", "GET", "/no/such/page"))
    assert_error(elsewhere, 404, "not_found", CATALOG)


# --- binary bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_binary_request_body_is_decoded_and_refused_as_not_json(in_process, fmt: str) -> None:
    payload = bytes(range(256))
    event = event_for(
        fmt,
        "POST",
        "/api/auth/token/",
        headers={"Content-Type": "application/octet-stream"},
        body=payload,
        base64_body=True,
    )
    reply = invoke(AUTH, event)
    assert_error(reply, 415, "unsupported_media_type", AUTH)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_base64_json_body_is_decoded(in_process, fmt: str) -> None:
    """A REST API with ``*/*`` as binary media type sends every body base64-encoded, JSON ones too."""
    user = UserFactory()
    event = event_for(
        fmt,
        "POST",
        "/api/auth/token/",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": user.username, "password": TEST_PASSWORD}),
        base64_body=True,
    )
    reply = invoke(AUTH, event)
    assert reply.status == 200, reply.body
    assert "access" in reply.json()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_binary_response_is_base64_encoded(in_process, fmt: str) -> None:
    path = finders.find(PNG)
    assert path, f"{PNG} is not a static file any more: pick another binary one"
    expected = Path(path).read_bytes()
    assert expected.startswith(b"\x89PNG")

    reply = invoke(CATALOG, event_for(fmt, "GET", f"/static/{PNG}", headers={"Accept": "image/*"}))
    assert reply.status == 200, reply.raw.get("body", "")[:200]
    assert reply.header("X-Traffic-Class") == CATALOG
    assert reply.header("Content-Type") == "image/png"
    assert reply.raw["isBase64Encoded"] is True
    assert reply.body == expected  # decoded as API Gateway decodes it: the file's exact bytes

    svg = invoke(CATALOG, event_for(fmt, "GET", "/static/admin/img/icon-yes.svg"))
    assert svg.status == 200 and svg.header("Content-Type") == "image/svg+xml"
    assert svg.raw["isBase64Encoded"] is False and svg.body.startswith(b"<svg")  # a text type: no base64


# --- cookies --------------------------------------------------------------------------------------------------


def _form(data: dict[str, str]) -> str:
    return urlencode(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_admin_login_round_trips_its_cookies(in_process, fmt: str) -> None:
    staff = UserFactory(is_staff=True)
    page = invoke(ADMIN, event_for(fmt, "GET", "/admin/login/", headers={"Accept": "text/html"}))
    assert page.status == 200
    if fmt == "v2":
        assert any(line.startswith("csrftoken=") for line in page.raw["cookies"])
        assert "set-cookie" not in page.raw["headers"]
    else:
        assert any(line.startswith("csrftoken=") for line in page.raw["multiValueHeaders"]["Set-Cookie"])
    csrf = page.cookie("csrftoken")
    assert csrf

    form = {"username": staff.username, "password": TEST_PASSWORD, "next": "/admin/", "csrfmiddlewaretoken": csrf}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"https://{HOST}", "Accept": "text/html"}
    refused = invoke(ADMIN, event_for(fmt, "POST", "/admin/login/", headers=headers, body=_form(form)))
    assert refused.status == 403, refused.body[:300]  # no cookie: CSRF failure (the control)

    login = invoke(
        ADMIN,
        event_for(fmt, "POST", "/admin/login/", headers=headers, cookies=[f"csrftoken={csrf}"], body=_form(form)),
    )
    assert login.status == 302, login.body[:1000]
    assert login.header("Location") == "/admin/"
    session = login.cookie("sessionid")
    assert session

    index = invoke(
        ADMIN,
        event_for(
            fmt,
            "GET",
            "/admin/",
            headers={"Accept": "text/html"},
            cookies=[f"csrftoken={login.cookie('csrftoken') or csrf}", f"sessionid={session}"],
        ),
    )
    assert index.status == 200, index.body[:500]
    assert staff.username.encode() in index.body  # the session cookie was read: the page greets the user


# --- body limits ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("base64_body", [False, True])
def test_a_body_over_the_class_limit_is_413(in_process, settings, fmt: str, base64_body: bool) -> None:
    limit = settings.BULWARK_CONFIG.serving.max_bodies[AUTH]  # SERVING_MAX_BODY_AUTH, 16k by default
    user = UserFactory()
    at_limit = json.dumps({"username": user.username, "password": TEST_PASSWORD}).ljust(limit)  # JSON + spaces
    headers = {"Content-Type": "application/json"}

    served = invoke(
        AUTH, event_for(fmt, "POST", "/api/auth/token/", headers=headers, body=at_limit, base64_body=base64_body)
    )
    assert served.status == 200, served.body[:300]  # exactly at the limit: served (the control)

    over = at_limit + " "
    reply = invoke(
        AUTH, event_for(fmt, "POST", "/api/auth/token/", headers=headers, body=over, base64_body=base64_body)
    )
    error = assert_error(reply, 413, "request_too_large", AUTH)
    assert error["detail"] == {"limit": limit, "length": limit + 1, "traffic_class": AUTH}


# --- the client address ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_client_address_is_the_one_api_gateway_saw(in_process, fmt: str) -> None:
    """A forged ``X-Forwarded-For: 127.0.0.1`` does not make a client loopback (which opens /metrics)."""
    forged = event_for(fmt, "GET", "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    if fmt == "v1":
        forged["multiValueHeaders"]["X-Forwarded-For"] = [f"127.0.0.1, {CLIENT_IP}, 130.176.89.142"]
        forged["headers"]["X-Forwarded-For"] = forged["multiValueHeaders"]["X-Forwarded-For"][0]
    assert_error(invoke(OPS, forged), 403, "permission_denied", OPS)

    no_address = event_for(fmt, "GET", "/metrics")
    no_address["requestContext"].pop("identity", None)
    no_address["requestContext"].get("http", {}).pop("sourceIp", None)
    if fmt == "v2":  # apig-wsgi reads http.sourceIp itself: a 2.0 event always has it
        no_address["requestContext"]["http"]["sourceIp"] = ""
    assert_error(invoke(OPS, no_address), 403, "permission_denied", OPS)

    # The control: a scraper that really is on loopback is let in.
    local = invoke(OPS, event_for(fmt, "GET", "/metrics", source_ip="127.0.0.1", headers={"Accept": "text/plain"}))
    assert local.status == 200, local.body[:300]
    assert b"bulwark_serving_requests_total" in local.body


# --- the function timeout and the budget ------------------------------------------------------------------------


def test_a_function_timeout_below_the_budget_is_logged_once(in_process, caplog) -> None:
    lambda_handlers.checkout.budget_check.warned = False  # once per process: whatever ran before
    short = LambdaContext("bulwark-checkout", timeout=3.0)  # checkout's budget is 15 s
    for _ in range(2):
        reply = invoke(CHECKOUT, event_for("v2", "GET", "/api/cart/"), short)
        assert reply.status == 401
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "lambda_timeout_below_budget"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "SERVING_BUDGET_CHECKOUT" in warnings[0].getMessage()

    caplog.clear()
    invoke(CATALOG, event_for("v2", "GET", "/api/products/"), LambdaContext("bulwark-catalog", timeout=60.0))
    assert not [r for r in caplog.records if getattr(r, "event", None) == "lambda_timeout_below_budget"]


# --- a fresh process: cold start, failed dependencies, the freeze between invocations ---------------------------

# Imports the handlers as the Lambda runtime does on a cold start, then answers {"handler", "event"} lines from
# stdin with {"response", "seconds"} lines. Bulwark's log records go to stdout (the runtime ships stdout and stderr
# alike); here stdout is moved to stderr first so that the answers have a channel of their own.
RUNNER = """
import json, os, sys, time
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
started = time.perf_counter()
from settings import lambda_handlers
answers.write(json.dumps({"imported": time.perf_counter() - started}) + "\\n")
answers.flush()

class Context:
    def __init__(self, name):
        self.aws_request_id, self.function_name = os.urandom(16).hex(), "bulwark-" + name
        self._deadline = time.monotonic() + 30
    def get_remaining_time_in_millis(self):
        return int((self._deadline - time.monotonic()) * 1000)

for line in sys.stdin:
    request = json.loads(line)
    started = time.perf_counter()
    response = lambda_handlers.HANDLERS[request["handler"]](request["event"], Context(request["handler"]))
    answers.write(json.dumps({"response": response, "seconds": time.perf_counter() - started}) + "\\n")
    answers.flush()
"""


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def function_env(**overrides: str) -> dict[str, str]:
    """A function's environment: the test run's (the stack's URLs, the run's secrets) with the production settings
    module and ``DJANGO_ENV``, the API's host as ``ALLOWED_HOSTS`` and the test database in place of the stack's."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    name = connections["default"].settings_dict["NAME"]
    env["DATABASE_URL"] = _with_database(env["DATABASE_URL"], name)
    if env.get("DATABASE_REPLICA_URLS"):
        env["DATABASE_REPLICA_URLS"] = ",".join(
            _with_database(url.strip(), name) for url in env["DATABASE_REPLICA_URLS"].split(",") if url.strip()
        )
    env.update(DJANGO_ENV="production", ALLOWED_HOSTS=HOST, DOTENV_FILE="none")  # as a function is configured
    env.update(overrides)
    return env


class Function:
    """One Lambda execution environment: a fresh process that imported ``settings.lambda_handlers``."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(COLD_START_BOUND)
        self.imported = ready["imported"]
        self.spawned = time.perf_counter() - started  # interpreter start included

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout}s:\n{self.log()}") from None
        if line is None:
            raise AssertionError(f"the function exited ({self.process.poll()}):\n{self.log()}")
        return json.loads(line)

    def invoke(self, traffic_class: str, event: dict[str, Any], timeout: float = 30.0) -> tuple[Reply, float]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"handler": traffic_class, "event": event}) + "\n")
        self.process.stdin.flush()
        answer = self._next(timeout)
        return reply_of(answer["response"]), answer["seconds"]

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)  # every thread stops, as Lambda freezes the environment

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


@pytest.fixture
def function(tmp_path: Path) -> Iterator[Any]:
    """``function(**env_overrides)`` starts an execution environment; all are stopped after the test."""
    started: list[Function] = []

    def start(**overrides: str) -> Function:
        started.append(Function(function_env(**overrides), tmp_path / f"function-{len(started)}.log"))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def wait_for_replica(timeout: float = 10.0) -> None:
    """Until the replica has replayed what the test committed on the primary (the function may read there)."""
    if "replica_1" not in connections:
        return
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        target = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    with connections["replica_1"].cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.02)


def no_traceback(function: Function) -> None:
    assert "Traceback" not in function.log(), function.log()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_cold_start_imports_and_serves(function, capsys) -> None:
    ProductFactory.create_batch(3)
    wait_for_replica()
    started = time.perf_counter()
    cold = function()
    first, first_seconds = cold.invoke(CATALOG, http_api_event("GET", "/api/products/", query="page_size=2"))
    total = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\n[lambda cold start] import {cold.imported:.2f}s (process start + import {cold.spawned:.2f}s), "
            f"first invoke {first_seconds:.3f}s, import + first invoke {cold.imported + first_seconds:.2f}s; "
            f"wall clock to the first answer {total:.2f}s"
        )
    assert total < COLD_START_BOUND
    assert first.status == 200, first.body[:500]
    assert first.header("X-Traffic-Class") == CATALOG
    assert first.json()["count"] == 3 and len(first.json()["results"]) == 2

    warm, _ = cold.invoke(CATALOG, rest_api_event("GET", "/api/products/", query={"page_size": ["1"]}))
    assert warm.status == 200 and len(warm.json()["results"]) == 1

    for traffic_class, event in (
        (OPS, http_api_event("GET", "/health/live")),
        (OPS, rest_api_event("GET", "/health")),
        (AUTH, rest_api_event("POST", "/api/auth/token/", headers={"Content-Type": ["application/json"]}, body="{}")),
        (CHECKOUT, http_api_event("GET", "/api/cart/")),
        (ADMIN, http_api_event("GET", "/admin/login/")),
    ):
        reply, _ = cold.invoke(traffic_class, event)
        assert reply.header("X-Traffic-Class") == traffic_class
        assert reply.status in {200, 400, 401}, (traffic_class, reply.status, reply.body[:300])
    wrong, _ = cold.invoke(CATALOG, http_api_event("GET", "/health"))
    assert_error(wrong, 404, "not_found", OPS)
    no_traceback(cold)


def test_the_database_unreachable(function) -> None:
    primary, replica = closed_port(), closed_port()
    down = function(
        DATABASE_URL=f"postgres://bulwark:unused@127.0.0.1:{primary}/bulwark",
        DATABASE_REPLICA_URLS=f"postgres://bulwark:unused@127.0.0.1:{replica}/bulwark",
    )

    health, seconds = down.invoke(OPS, http_api_event("GET", "/health"))
    assert seconds < 5.0
    assert health.status == 503, health.body[:500]
    assert health.header("X-Traffic-Class") == OPS
    assert health.header("Content-Type").startswith("application/json")
    report = health.json()
    assert report["success"] is False
    database = report["spofs"]["status"]["database"]
    assert database["status"] == "fail" and database["healthy"] is False
    assert "database" in report["spofs"]["critical"]

    for fmt in FORMATS:
        reply, seconds = down.invoke(CATALOG, event_for(fmt, "GET", "/api/products/"))
        assert seconds < 5.0
        error = assert_error(reply, 503, "dependency_unavailable", CATALOG)
        assert "database" in error["message"].lower()
        assert reply.header("Retry-After")

    live, _ = down.invoke(OPS, rest_api_event("GET", "/health/live"))
    assert live.status == 200  # the process itself serves
    ready, _ = down.invoke(OPS, rest_api_event("GET", "/health/ready"))
    assert ready.status == 503
    no_traceback(down)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_redis_unreachable_still_serves(function) -> None:
    ProductFactory.create_batch(2)
    wait_for_replica()
    # Sign-up and log-in hash a password (PBKDF2, half a second of CPU or more): on a loaded test machine that alone
    # can pass the auth budget (5 s), which is not what this test is about.
    cacheless = function(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", SERVING_BUDGET_AUTH="30s")

    products, seconds = cacheless.invoke(CATALOG, http_api_event("GET", "/api/products/"))
    assert products.status == 200, products.body[:500]
    assert products.json()["count"] == 2
    assert seconds < 5.0

    username = f"grace-{uuid.uuid4().hex[:6]}"
    registered, hashing = cacheless.invoke(
        AUTH,
        json_body(
            "v1",
            "POST",
            "/api/auth/register/",
            {"username": username, "email": f"{username}@example.com", "password": TEST_PASSWORD},
        ),
    )
    assert registered.status == 201, (hashing, registered.body[:500])
    tokens, _ = cacheless.invoke(
        AUTH, json_body("v2", "POST", "/api/auth/token/", {"username": username, "password": TEST_PASSWORD})
    )
    assert tokens.status == 200, tokens.body[:500]

    health, _ = cacheless.invoke(OPS, http_api_event("GET", "/health"))
    report = health.json()
    assert report["spofs"]["status"]["database"]["status"] == "pass"
    assert report["spofs"]["status"]["rateLimit"]["status"] != "pass"  # the cache is in memory: said so
    no_traceback(cacheless)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_write_after_a_freeze_that_dropped_the_connections_is_served(function) -> None:
    """Lambda freezes an environment between invocations; a connection idle across a freeze may be gone when it
    thaws (an idle timeout of RDS Proxy, of PostgreSQL or of the network path). Here every connection of the
    function is ended while it is frozen, as such a timeout would, then a checkout arrives."""
    product, user = ProductFactory(stock=50), UserFactory()
    wait_for_replica()
    token = _token(user)
    env = function()
    add = {"product_id": product.id, "quantity": 1}
    warm, _ = env.invoke(CHECKOUT, json_body("v2", "POST", "/api/cart/items/", add, token=token))
    assert warm.status == 201, warm.body[:500]
    time.sleep(0.5)  # the monitor has probed every node and settled

    env.freeze()
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    time.sleep(1.0)
    env.thaw()
    time.sleep(0.05)  # the runtime hands the next event over just after the thaw
    after, _ = env.invoke(CHECKOUT, json_body("v2", "POST", "/api/cart/items/", add, token=token))
    assert after.status == 201, (after.body[:500], env.log())  # the gone connections replaced, no node marked down
