"""A guarded HTTP client for external services: connect and read timeouts, no retries, one breaker.

Built on urllib3 (thread-safe connection pool; one client per service and process). Every call goes
through the service's breaker, so when the service is down, erroring or hanging, the first
``failure_threshold`` calls pay at most one connect or read timeout each and every later call is refused
at once (:class:`~resilience.breakers.exceptions.ExternalCircuitOpen`) until a trial call finds it back.
urllib3's own retries and redirects are off: a retry is the caller's decision (with an idempotency key).

The read timeout bounds each wait for data; a server that sends nothing (hung) costs at most
``connect_timeout + read_timeout``. Within a request, both are also cut to what is left of the request's time
budget (:mod:`resilience.serving.budget`), and no call is made once it is spent: such a cut raises
:class:`~resilience.breakers.exceptions.ExternalBudgetSpent` (an ExternalTimeout) and is not counted by the
breaker, since it says nothing about the service. The request's ``X-Request-ID`` goes with every call, so the
service's logs can be joined with ours.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

from core.request_id import REQUEST_ID_HEADER, current_request_id
from resilience.breakers.breaker import CircuitBreaker, CircuitOpenError
from resilience.breakers.exceptions import (
    ExternalBadResponse,
    ExternalBudgetSpent,
    ExternalCircuitOpen,
    ExternalClientError,
    ExternalConnectionError,
    ExternalServerError,
    ExternalTimeout,
)
from resilience.serving.budget import budget_remaining

logger = logging.getLogger("resilience.breakers")

MIN_CALL_SECONDS = 0.05  # less budget left than this: the call is not made (no answer could arrive in time)

RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})  # the service is overloaded or slow, not refusing us


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: Any  # parsed JSON (None for an empty body)
    headers: Mapping[str, str]


class GuardedHttpClient:
    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        breaker: CircuitBreaker,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int = 10,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.breaker = breaker
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.headers = {"Accept": "application/json", "User-Agent": "bulwark", **(headers or {})}
        # block=False: a burst beyond the pool opens extra connections rather than queueing behind a slow one.
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        expected: tuple[int, ...] = (200,),
    ) -> HttpResult:
        """Send one request through the breaker; returns the answer when its status is ``expected``.

        Raises ExternalServiceUnavailable (timeout, connection, 5xx/408/429, unreadable answer, open breaker)
        or ExternalClientError (any other 4xx: never counted by the breaker).
        """
        budget = budget_remaining()
        if budget is not None and budget < MIN_CALL_SECONDS:
            raise ExternalBudgetSpent(self.service, f"{method} {path} not sent: the request's time budget is spent")
        try:
            result = self.breaker.call(self._send, method, path, json_body, headers or {}, expected, budget)
        except CircuitOpenError as exc:
            raise ExternalCircuitOpen(
                self.service, str(exc), retry_after=max(0.0, exc.retry_after), forced=exc.forced
            ) from None
        if result.status not in expected:  # a 4xx: the service answered (a success for the breaker), refusing us
            raise ExternalClientError(
                self.service, result.status, f"{method} {path} answered {result.status}", result.body
            )
        return result

    def close(self) -> None:
        self._pool.clear()

    def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        headers: Mapping[str, str],
        expected: tuple[int, ...],
        budget: float | None = None,
    ) -> HttpResult:
        url = f"{self.base_url}/{path.lstrip('/')}"
        sent = {**self.headers, **headers}
        request_id = current_request_id.get()
        if request_id != "-" and REQUEST_ID_HEADER not in sent:
            sent[REQUEST_ID_HEADER] = request_id
        connect, read = self.connect_timeout, self.read_timeout
        if budget is not None:
            connect, read = min(connect, budget), min(read, budget)
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            response = self._pool.request(
                method,
                url,
                body=body,
                headers=sent,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=connect, read=read),
            )
        except NewConnectionError as exc:  # before ConnectTimeoutError: urllib3 derives the one from the other
            raise self._failed(ExternalConnectionError(self.service, f"cannot connect: {exc}"), started) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            connecting = isinstance(exc, ConnectTimeoutError)
            shortened = connect < self.connect_timeout if connecting else read < self.read_timeout
            if not shortened:  # the service had its whole timeout: its failure
                raise self._timed_out(exc, started) from exc
            raise self._failed(
                ExternalBudgetSpent(self.service, f"no answer within the {budget:g}s left of the request's budget"),
                started,
            ) from exc
        except HTTPError as exc:
            raise self._failed(ExternalConnectionError(self.service, f"{type(exc).__name__}: {exc}"), started) from exc
        status = response.status
        try:
            parsed = json.loads(response.data) if response.data else None
        except ValueError:
            parsed = None
            if status in expected:
                raise self._failed(
                    ExternalBadResponse(self.service, f"{method} {path}: {status} with a body that is not JSON"),
                    started,
                ) from None
        if status in expected:
            return HttpResult(status, parsed, dict(response.headers))
        message = f"{method} {path} answered {status}"
        if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
            raise self._failed(ExternalServerError(self.service, status, message), started)
        if 400 <= status < 500:
            return HttpResult(status, parsed, dict(response.headers))  # refused: raised outside the breaker
        raise self._failed(ExternalBadResponse(self.service, message), started)

    def _timed_out(self, exc: Exception, started: float) -> Exception:
        if isinstance(exc, ConnectTimeoutError):
            message = f"no connection within {self.connect_timeout:g}s"
        else:
            message = f"no answer within {self.read_timeout:g}s"
        return self._failed(ExternalTimeout(self.service, message), started)

    def _failed(self, error: Exception, started: float) -> Exception:
        logger.info(
            "%s call failed after %.2fs: %s",
            self.service,
            time.monotonic() - started,
            error,
            extra={"event": "external_call_failed", "service": self.service, "error": str(error)},
        )
        return error
