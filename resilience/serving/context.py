"""The traffic class of the request this thread serves, for log records (set by the serving middleware)."""

from __future__ import annotations

from contextvars import ContextVar

current_traffic_class: ContextVar[str | None] = ContextVar("bulwark_traffic_class", default=None)
