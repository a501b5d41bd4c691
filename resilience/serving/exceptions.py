"""The serving layer's errors: a class over its limit, a request over its budget, a path outside this server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.exceptions import AppError

if TYPE_CHECKING:
    from resilience.serving.budget import Budget

OVERLOADED_RETRY_AFTER = 1  # seconds: a bulkhead frees in about one request's time


class OverloadedError(AppError):
    code = "overloaded"
    message = "This server is at its limit for these requests; retry shortly."

    def __init__(self, traffic_class: str, *, limit: int, reserve: bool = False) -> None:
        reason = "reserve" if reserve else "class_limit"
        message = (
            f"Every thread this server gives to requests other than health and metrics is busy; retry in "
            f"{OVERLOADED_RETRY_AFTER}s."
            if reserve
            else f"This server already runs {limit} {traffic_class} request(s) at once, its limit; retry in "
            f"{OVERLOADED_RETRY_AFTER}s."
        )
        super().__init__(
            message,
            detail={"traffic_class": traffic_class, "limit": limit, "reason": reason},
            headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)},
        )


class RequestTimeoutError(AppError):
    code = "request_timeout"
    message = "The request ran out of time; its work was cut off."

    @classmethod
    def for_budget(cls, budget: Budget | None) -> RequestTimeoutError:
        if budget is None:
            return cls()
        return cls(
            f"The request ran out of its {budget.seconds:g}s budget; its database work was cut off and rolled back.",
            detail={"traffic_class": budget.traffic_class, "budget_seconds": budget.seconds},
        )
