"""Bulwark's own limits on the request line and the headers, answered as JSON before Django runs.

gunicorn answers its own limit errors with an HTML page, which no API client can read. So ``gunicorn.conf.py``
sets gunicorn's limits far above these (it says there what gunicorn still answers itself), and
:class:`RequestLimitsMiddleware`, which ``settings/wsgi.py`` wraps around the Django application, refuses what
is over them with the one error renderer (``core.api.responses.error_response``): the envelope
``{"error": {"code", "message", "detail", "request_id"}}`` with ``X-Request-ID`` (on the API paths and for any
client that asks for JSON; the message as plain text for a browser elsewhere: the renderer's one rule), before
Django, its middleware and any database or cache work.

* the request line (method, target, protocol) over :data:`MAX_REQUEST_LINE` -> 414 ``uri_too_long``;
* more than :data:`MAX_HEADER_COUNT` headers -> 431 ``headers_too_large``, ``detail.reason`` ``too_many``;
* one header (name + value) over :data:`MAX_HEADER_SIZE` (or its own limit in :data:`HEADER_SIZE_EXCEPTIONS`)
  -> 431, reason ``header_too_large``, ``detail.header`` naming it;
* all headers (names + values) over :data:`MAX_HEADERS_TOTAL` -> 431, reason ``total_too_large``;
* a path that is not UTF-8 once percent-decoded, or holds a control character -> 400 ``bad_request``.

The request line is the server's raw target (``RAW_URI`` from gunicorn, ``REQUEST_URI`` from others) or, when
the server gives neither, one rebuilt from ``SCRIPT_NAME``, ``PATH_INFO`` and ``QUERY_STRING``. Headers are
counted as the WSGI environ has them: a server joins repeated fields into one (``a,b``), which then counts
once, at its joined size. Sizes are in characters of the WSGI strings, which are bytes decoded as latin-1
(PEP 3333), so they are bytes. No header value is ever logged or echoed: a refusal names at most the header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.http import HttpRequest, HttpResponse

from core.exceptions import AppError, BadRequestError, HeadersTooLargeError, UriTooLongError
from core.request_id import RequestIdMiddleware

# 4 KiB: what gunicorn refused before (its default 4094), so nothing that was served is refused now, only
# answered as JSON; Bulwark's longest query parameters (q, category) are 200 characters, and a request that
# needs more belongs in a body. (Common proxies allow about 8 KiB: nginx, Apache's LimitRequestLine 8190.)
MAX_REQUEST_LINE = 4 * 1024
# Apache's LimitRequestFields and gunicorn's own default; Bulwark's clients send about ten.
MAX_HEADER_COUNT = 100
# One header, name + value: room for any sane cookie or token ...
MAX_HEADER_SIZE = 16 * 1024
# ... but a bearer token over resilience.auth's 8 KB is answered by the auth layer itself, with the more
# telling 401 ``token_not_valid`` (reason ``too_large``): Authorization may be this large before it is a 431.
HEADER_SIZE_EXCEPTIONS: dict[str, int] = {"HTTP_AUTHORIZATION": 32 * 1024}
# All headers together, names + values.
MAX_HEADERS_TOTAL = 64 * 1024

# The environ keys that hold a request header besides HTTP_*.
_UNPREFIXED_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")
# What the renderer reads from the request: the client's Accept (JSON or plain text) and its X-Request-ID.
_META_FOR_RENDERER = ("HTTP_ACCEPT", "HTTP_X_REQUEST_ID")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# Characters a client may leave unquoted in a path (RFC 3986 pchar and "/"): for rebuilding a request line.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

logger = logging.getLogger(__name__)


def _wsgi_bytes(value: str) -> bytes:
    """A WSGI string's bytes; a server that broke PEP 3333 with a non-latin-1 character gets it as UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def request_line_length(environ: WSGIEnvironment) -> int:
    """The length of ``METHOD target PROTOCOL``, from the server's raw target or one rebuilt as a client sent it."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target is None:
        path = _wsgi_bytes(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        target = quote(path, safe=_PATH_SAFE) + (f"?{query}" if query else "")
    return len(environ.get("REQUEST_METHOD", "")) + len(target) + len(environ.get("SERVER_PROTOCOL", "")) + 2


def request_headers(environ: WSGIEnvironment) -> Iterator[tuple[str, str]]:
    """``(environ key, value)`` of every request header in the environ."""
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in _UNPREFIXED_HEADERS:
            yield key, value


def header_name(key: str) -> str:
    """``HTTP_X_PADDING`` -> ``X-Padding``: the name a client sent (the environ keeps no case; so, Title-Case)."""
    return key.removeprefix("HTTP_").replace("_", "-").title()


def _header_error(environ: WSGIEnvironment) -> AppError | None:
    headers = list(request_headers(environ))
    if len(headers) > MAX_HEADER_COUNT:
        detail = {"reason": "too_many", "limit": MAX_HEADER_COUNT, "count": len(headers)}
        return HeadersTooLargeError(f"More than {MAX_HEADER_COUNT} headers.", detail=detail)
    total = 0
    for key, value in headers:
        size = len(header_name(key)) + len(value)  # the name's length is that of the key less "HTTP_"
        limit = HEADER_SIZE_EXCEPTIONS.get(key, MAX_HEADER_SIZE)
        if size > limit:
            name = header_name(key)
            detail = {"reason": "header_too_large", "header": name, "limit": limit, "length": size}
            return HeadersTooLargeError(f"The {name} header is over {limit} bytes.", detail=detail)
        total += size
    if total > MAX_HEADERS_TOTAL:
        detail = {"reason": "total_too_large", "limit": MAX_HEADERS_TOTAL, "length": total}
        return HeadersTooLargeError(f"The headers are over {MAX_HEADERS_TOTAL} bytes together.", detail=detail)
    return None


def _path_error(environ: WSGIEnvironment) -> AppError | None:
    raw = environ.get("PATH_INFO", "")
    try:
        path = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 once percent-decoded (or not even a WSGI string)
        return BadRequestError("The request path is not valid UTF-8.", detail={"reason": "path_not_utf8"})
    if _CONTROL_CHARACTER.search(path):
        return BadRequestError(
            "The request path holds a control character.", detail={"reason": "path_control_character"}
        )
    return None


def request_error(environ: WSGIEnvironment) -> AppError | None:
    """What is wrong with this request before any application code may see it, or None."""
    length = request_line_length(environ)
    if length > MAX_REQUEST_LINE:
        return UriTooLongError(
            f"The request line is over {MAX_REQUEST_LINE} bytes.", detail={"limit": MAX_REQUEST_LINE, "length": length}
        )
    return _header_error(environ) or _path_error(environ)


def _renderer_request(environ: WSGIEnvironment) -> HttpRequest:
    """A bare HttpRequest with what the renderer and the request id need; never one parsed from the environ."""
    request = HttpRequest()
    request.method = str(environ.get("REQUEST_METHOD", ""))
    path = _wsgi_bytes(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).decode("utf-8", "replace")
    request.path = request.path_info = path
    request.META = {key: environ[key] for key in _META_FOR_RENDERER if key in environ}
    return request


def wsgi_refuse(
    environ: WSGIEnvironment, start_response: StartResponse, error: AppError, *, log: bool = True
) -> list[bytes]:
    """Answer ``error`` before Django as every Bulwark error is answered, with a request id (the client's if sane).

    ``log=False`` for a refusal its caller logs in its own way (a flood of them would flood the log).
    """
    # Imported here, not at the top: the renderer reads Django's settings when it is imported, and this module is
    # imported before they are set up (``settings/wsgi.py``).
    from core.api.responses import error_response

    def render(request: HttpRequest) -> HttpResponse:
        if log:  # inside RequestIdMiddleware, so this line carries the request id, as the response does
            logger.warning("Refused before Django: %s %s: %s", error.http_status, error.code, error.message)
        return error_response(request, error)

    response = RequestIdMiddleware(render)(_renderer_request(environ))
    body = response.content
    headers = list(response.items())
    if not response.has_header("Content-Length"):
        headers.append(("Content-Length", str(len(body))))
    start_response(f"{response.status_code} {response.reason_phrase}", headers)
    return [body]


class RequestLimitsMiddleware:
    """WSGI middleware: a request over the limits above is answered here, anything else goes to ``app``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        error = request_error(environ)
        if error is None:
            return self.app(environ, start_response)
        return wsgi_refuse(environ, start_response, error)
