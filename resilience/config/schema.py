"""The environment schema: every variable Bulwark reads, its type, level, default and SPOF area."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["str", "secret", "url", "int", "bool", "duration", "list", "choice"]
Level = Literal["required", "recommended", "optional"]


@dataclass(frozen=True)
class Var:
    """One environment variable: how to parse it and what it protects."""

    name: str
    kind: Kind
    level: Level
    area: str
    help: str
    default: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def secret(self) -> bool:
        return self.kind == "secret" or self.name in SECRET_URLS


# URLs that may carry a password: never printed, and accepted as NAME_FILE too.
SECRET_URLS = frozenset({"DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL"})

SCHEMA: tuple[Var, ...] = (
    Var(
        "SECRET_KEY",
        "secret",
        "required",
        "configuration",
        "Django's signing key: at least 50 characters, at least 5 distinct.",
    ),
    Var(
        "DATABASE_URL",
        "url",
        "required",
        "database",
        "PostgreSQL primary, e.g. postgres://user:pass@host:5432/db (or give DB_HOST, DB_PORT, "
        "DB_USERNAME, DB_PASSWORD, DB_NAME).",
    ),
    Var("DB_HOST", "str", "optional", "database", "Primary host (alias DB_HOST_PRIMARY), when DATABASE_URL is absent."),
    Var("DB_PORT", "int", "optional", "database", "Primary port, with DB_HOST.", default="5432"),
    Var("DB_USERNAME", "str", "optional", "database", "Database user, with DB_HOST."),
    Var("DB_PASSWORD", "secret", "optional", "database", "Database password, with DB_HOST."),
    Var("DB_NAME", "str", "optional", "database", "Database name, with DB_HOST."),
    Var("JWT_SECRET", "secret", "required", "authentication", "Active JWT signing secret, at least 32 bytes."),
    Var(
        "DATABASE_REPLICA_URLS",
        "list",
        "recommended",
        "database",
        "Comma-separated read replica URLs (or DB_HOST_REPLICA with the primary's credentials).",
    ),
    Var("DB_HOST_REPLICA", "str", "optional", "database", "Replica host, with the DB_* credentials."),
    Var(
        "REDIS_URL",
        "url",
        "recommended",
        "rateLimit",
        "Redis for rate limits and the shared cache (rediss:// allowed).",
    ),
    Var(
        "OTEL_EXPORTER_OTLP_ENDPOINTS",
        "list",
        "recommended",
        "telemetry",
        "Comma-separated OTLP endpoints for traces (JAEGER_ENDPOINT accepted too).",
    ),
    Var(
        "JWT_SECRET_PREV",
        "secret",
        "optional",
        "authentication",
        "Previous JWT secret, still accepted for verification.",
    ),
    Var("JWT_EXPIRES_IN", "duration", "optional", "authentication", "Access token lifetime.", default="15m"),
    Var("JWT_REFRESH_EXPIRES_IN", "duration", "optional", "authentication", "Refresh token lifetime.", default="7d"),
    Var(
        "DJANGO_ENV",
        "choice",
        "optional",
        "configuration",
        "production or development.",
        default="production",
        choices=("production", "development"),
    ),
    Var("DEBUG", "bool", "optional", "configuration", "Django debug mode (development only).", default="false"),
    Var("ALLOWED_HOSTS", "list", "optional", "serving", "Comma-separated host names this server answers to."),
    Var(
        "PAYMENT_GATEWAY_URL",
        "url",
        "optional",
        "circuitBreakers",
        "Payment gateway base URL; absent = orders stay pending_payment.",
    ),
    Var("DB_CONNECT_TIMEOUT", "int", "optional", "database", "PostgreSQL connect timeout, whole seconds.", default="2"),
    Var("WEB_CONCURRENCY", "int", "optional", "serving", "gunicorn worker processes.", default="2"),
    Var("PORT", "int", "optional", "serving", "Port gunicorn listens on (127.0.0.1).", default="8000"),
    Var(
        "LOG_LEVEL",
        "choice",
        "optional",
        "logging",
        "DEBUG, INFO, WARNING or ERROR.",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
)

SCHEMA_BY_NAME: dict[str, Var] = {var.name: var for var in SCHEMA}
