"""The HTTP payment gateway client (API: docs/payment_gateway.md), guarded by the ``payment_gateway`` breaker.

Down, erroring (5xx) or hanging: :class:`GatewayUnavailableError` after at most one connect + read timeout;
after ``PAYMENT_GATEWAY_BREAKER_FAILURES`` such failures in a row the breaker opens and every call fails at
once (``skipped=True``) until a trial call finds the gateway back. A decline is an answer, not a failure: it
never counts against the breaker, and neither does any other 4xx.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

from resilience.breakers.breaker import CircuitBreaker
from resilience.breakers.exceptions import ExternalCircuitOpen, ExternalClientError, ExternalServiceUnavailable
from resilience.breakers.http import GuardedHttpClient, HttpResult
from resilience.breakers.registry import breaker_get
from shop.payments.exceptions import GatewayRequestRefusedError, GatewayUnavailableError
from shop.payments.gateways.base import ChargeOutcome, ChargeResult, PaymentGateway

BREAKER = "payment_gateway"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpPaymentGateway(PaymentGateway):
    def __init__(
        self, *, base_url: str, connect_timeout: float, read_timeout: float, breaker: CircuitBreaker | None = None
    ) -> None:
        breaker = breaker or breaker_get(BREAKER)
        self.client = GuardedHttpClient(
            service=breaker.name,
            base_url=base_url,
            breaker=breaker,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, reference: str) -> ChargeResult:
        body = {"amount": str(amount), "currency": currency, "reference": reference}
        # 201: charged now; 200: this key was charged before (the same charge, not a new one); 402: declined.
        result = self._request(
            "POST", "/charges", body=body, headers={IDEMPOTENCY_HEADER: idempotency_key}, expected=(200, 201, 402)
        )
        return self._charge(result)

    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        result = self._request("GET", f"/charges/{quote(idempotency_key, safe='')}", expected=(200, 404))
        return None if result.status == 404 else self._charge(result)

    def retry_now(self) -> None:
        self.client.breaker.trial_now()

    def _request(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...],
        body: dict | None = None,
        headers: dict | None = None,
    ) -> HttpResult:
        try:
            return self.client.request(method, path, json_body=body, headers=headers, expected=expected)
        except ExternalCircuitOpen as exc:
            raise GatewayUnavailableError(str(exc), skipped=True) from exc
        except ExternalServiceUnavailable as exc:
            raise GatewayUnavailableError(str(exc)) from exc
        except ExternalClientError as exc:
            raise GatewayRequestRefusedError(f"{exc} ({exc.body!r:.200})") from exc

    @staticmethod
    def _charge(result: HttpResult) -> ChargeResult:
        body = result.body if isinstance(result.body, dict) else {}
        status, reference = body.get("status"), body.get("id")
        if status not in (ChargeOutcome.SUCCEEDED, ChargeOutcome.DECLINED) or not isinstance(reference, str):
            # The gateway answered, but not a charge: the outcome is unknown, so the payment is retried later.
            raise GatewayUnavailableError(f"{BREAKER}: answered {result.status} without a charge: {body!r:.200}")
        return ChargeResult(outcome=ChargeOutcome(status), reference=reference, message=str(body.get("message", "")))
