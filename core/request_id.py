"""``X-Request-ID`` on every response, and on every log line written while serving it.

A client's own id is kept when it is sane (≤ 128 characters of ``[A-Za-z0-9._:-]``), so a
request can be followed across services; otherwise a fresh one is generated. No dependency.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a client's id kept as it is (HAProxy's rule too)
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")


def request_id_for(request: HttpRequest) -> str:
    """The id of this request (set by the middleware; generated if the middleware did not run)."""
    request_id = getattr(request, "request_id", None)
    if request_id is None:
        request_id = uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
    return request_id


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request.request_id = offered if SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex  # type: ignore[attr-defined]
        token = current_request_id.set(request.request_id)  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request.request_id  # type: ignore[attr-defined]
        return response


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)  # django.request logs after the middleware has finished
        record.request_id = getattr(request, "request_id", None) or current_request_id.get()
        return True
