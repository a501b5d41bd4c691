"""The environment schema: every variable Bulwark reads, its type, level, default, secrecy and SPOF area.

It is the single source for the settings (through :mod:`resilience.config.loader`), ``.env.example``
and the README's table (:mod:`resilience.config.docs`) and ``manage.py validate_env``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["str", "secret", "url", "int", "bool", "duration", "list", "choice", "rate", "size"]
Level = Literal["required", "recommended", "optional"]

# The seed's eight areas, in the order /health and validate_env show them.
AREAS: tuple[str, ...] = (
    "database",
    "authentication",
    "configuration",
    "logging",
    "telemetry",
    "serving",
    "rateLimit",
    "circuitBreakers",
)
CRITICAL_AREAS = frozenset({"database", "authentication", "configuration"})
AREA_TITLES = {
    "database": "Database",
    "authentication": "Authentication",
    "configuration": "Configuration",
    "logging": "Logging",
    "telemetry": "Telemetry",
    "serving": "Serving",
    "rateLimit": "Cache and rate limiting",
    "circuitBreakers": "External services and circuit breakers",
}


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
    secret: bool = False


def _secret(name: str, level: Level, area: str, help: str) -> Var:
    return Var(name, "secret", level, area, help, secret=True)


# Per traffic class (resilience/serving/classes.py): limit in flight per worker, time budget, body size limit.
_SERVING_DEFAULTS = {
    "catalog": ("4", "5s", "16k"),
    "auth": ("3", "10s", "16k"),  # a log-in hashes a password: CPU, slow on a busy machine, wasted if cut
    "checkout": ("3", "15s", "64k"),
    "admin": ("2", "30s", "2m"),
    "ops": ("4", "3s", "1k"),  # probes and scrapes come in bursts; each is cheap
}


def _serving_vars() -> tuple[Var, ...]:
    found: list[Var] = []
    for name, (limit, budget, body) in _SERVING_DEFAULTS.items():
        upper = name.upper()
        found += [
            Var(
                f"SERVING_LIMIT_{upper}",
                "int",
                "optional",
                "serving",
                f"{name} requests in flight per worker; more are answered 503 overloaded at once.",
                default=limit,
            ),
            Var(
                f"SERVING_BUDGET_{upper}",
                "duration",
                "optional",
                "serving",
                f"Time budget of each {name} request: its database statements and outgoing calls are cut off at it "
                "(504 request_timeout).",
                default=budget,
            ),
            Var(
                f"SERVING_MAX_BODY_{upper}",
                "size",
                "optional",
                "serving",
                f"Largest {name} request body (bytes, or k/m); larger is 413 request_too_large.",
                default=body,
            ),
        ]
    return tuple(found)


SCHEMA: tuple[Var, ...] = (
    _secret("SECRET_KEY", "required", "configuration", "Django's signing key: at least 50 characters, 5 distinct."),
    Var(
        "DATABASE_URL",
        "url",
        "required",
        "database",
        "PostgreSQL primary, e.g. postgres://user:pass@host:5432/db; several hosts allowed "
        "(h1:5432,h2:5432?target_session_attrs=read-write). Or give the DB_* variables.",
        secret=True,
    ),
    Var("DB_HOST", "str", "optional", "database", "Primary host when DATABASE_URL is absent (alias DB_HOST_PRIMARY)."),
    Var("DB_HOST_PRIMARY", "str", "optional", "database", "Alias of DB_HOST."),
    Var("DB_PORT", "int", "optional", "database", "Port of DB_HOST and DB_HOST_REPLICA.", default="5432"),
    Var("DB_USERNAME", "str", "optional", "database", "Database user, with DB_HOST."),
    _secret("DB_PASSWORD", "optional", "database", "Database password, with DB_HOST."),
    Var("DB_NAME", "str", "optional", "database", "Database name, with DB_HOST."),
    _secret("JWT_SECRET", "required", "authentication", "Active JWT signing secret, at least 32 bytes."),
    Var(
        "DATABASE_REPLICA_URLS",
        "list",
        "recommended",
        "database",
        "Comma-separated read replica URLs (or DB_HOST_REPLICA with the primary's credentials).",
        secret=True,
    ),
    Var("DB_HOST_REPLICA", "str", "optional", "database", "Replica host, with the DB_* credentials."),
    Var(
        "REDIS_URL",
        "url",
        "recommended",
        "rateLimit",
        "Redis for rate limits and the shared cache (rediss:// allowed).",
        secret=True,
    ),
    Var(
        "REDIS_SENTINELS",
        "list",
        "optional",
        "rateLimit",
        "Comma-separated host:port of Redis Sentinels, instead of REDIS_URL: Bulwark uses the master they name.",
    ),
    Var(
        "REDIS_SENTINEL_MASTER",
        "str",
        "optional",
        "rateLimit",
        "The name the Sentinels monitor the master under (with REDIS_SENTINELS).",
        default="mymaster",
    ),
    Var(
        "OTEL_EXPORTER_OTLP_ENDPOINTS",
        "list",
        "recommended",
        "telemetry",
        "Comma-separated OTLP/HTTP endpoints for traces (JAEGER_ENDPOINT accepted as one).",
    ),
    Var(
        "JAEGER_ENDPOINT",
        "url",
        "optional",
        "telemetry",
        "The seed's single trace endpoint; read as one OTLP endpoint.",
    ),
    Var(
        "PROMETHEUS_PORT",
        "int",
        "optional",
        "telemetry",
        "The seed's metrics port. Not used: Bulwark opens no separate metrics port.",
    ),
    _secret(
        "JWT_SECRET_PREV",
        "optional",
        "authentication",
        "Previous JWT secret (at least 32 bytes), still accepted for verification after a rotation.",
    ),
    Var("JWT_EXPIRES_IN", "duration", "optional", "authentication", "Access token lifetime.", default="15m"),
    Var("JWT_REFRESH_EXPIRES_IN", "duration", "optional", "authentication", "Refresh token lifetime.", default="7d"),
    Var(
        "STAFF_SESSION_IDLE",
        "duration",
        "optional",
        "authentication",
        "An admin session ends after this long without a request (the session cookie itself lives 12 h at most).",
        default="30m",
    ),
    Var(
        "JWT_ROTATION_MAX_AGE",
        "duration",
        "optional",
        "authentication",
        "A signing key older than this is reported overdue for rotation (/health, the dashboard, spof_report).",
        default="90d",
    ),
    Var(
        "JWT_LEEWAY",
        "duration",
        "optional",
        "authentication",
        "Clock skew tolerated on exp/nbf/iat (at most 60s); a previous key retires after the lifetimes plus this.",
        default="30s",
    ),
    Var(
        "JWT_KIDLESS_UNTIL",
        "str",
        "optional",
        "authentication",
        "Migration window for tokens issued before the key ring: until this ISO-8601 instant (e.g. "
        "2027-01-31T00:00:00Z) environment-key tokens may lack iss/aud, and kid-less ones verify against JWT_SECRET "
        "only. Set it to the upgrade time plus the refresh lifetime. Unset: refused.",
    ),
    Var(
        "JWT_JWKS_MAX_AGE",
        "duration",
        "optional",
        "authentication",
        "Cache-Control max-age of /.well-known/jwks.json; a staged asymmetric key is published this long "
        "before it may sign.",
        default="5m",
    ),
    _secret(
        "SECRET_KEY_FALLBACKS",
        "optional",
        "configuration",
        "Comma-separated previous SECRET_KEYs: sessions and the encrypted signing keys in the database stay "
        "readable after a SECRET_KEY rotation (then run rotate_jwt_key --reencrypt).",
    ),
    Var(
        "DJANGO_ENV",
        "choice",
        "optional",
        "configuration",
        "production or development.",
        default="production",
        choices=("production", "development"),
    ),
    Var("DEBUG", "bool", "optional", "configuration", "Django debug pages; refused in production.", default="false"),
    Var(
        "ALLOWED_HOSTS",
        "list",
        "optional",
        "serving",
        "Comma-separated host names served; required in production (development: localhost).",
    ),
    Var(
        "SECURE_SSL_REDIRECT",
        "bool",
        "optional",
        "serving",
        "Production: redirect HTTP to HTTPS (/health and /metrics exempt).",
        default="true",
    ),
    Var(
        "SECURE_PROXY_SSL_HEADER",
        "str",
        "optional",
        "serving",
        "Header:value a trusted proxy sets on HTTPS requests, e.g. X-Forwarded-Proto:https.",
    ),
    Var(
        "PAYMENT_GATEWAY_URL",
        "url",
        "optional",
        "circuitBreakers",
        "Payment gateway base URL; absent = orders stay pending_payment.",
    ),
    Var(
        "PAYMENT_GATEWAY_CONNECT_TIMEOUT",
        "duration",
        "optional",
        "circuitBreakers",
        "Payment gateway connect timeout.",
        default="2s",
    ),
    Var(
        "PAYMENT_GATEWAY_TIMEOUT",
        "duration",
        "optional",
        "circuitBreakers",
        "Payment gateway read timeout: a hung gateway holds a checkout at most this long (plus the connect "
        "timeout); at most 20s, within gunicorn's 30s worker timeout.",
        default="5s",
    ),
    Var(
        "PAYMENT_GATEWAY_BREAKER_FAILURES",
        "int",
        "optional",
        "circuitBreakers",
        "Consecutive failed gateway calls (down, 5xx, timeout) across all workers that open the breaker for "
        "the fleet (shared through Redis; counted per worker while Redis is down).",
        default="3",
    ),
    Var(
        "PAYMENT_GATEWAY_BREAKER_RESET",
        "duration",
        "optional",
        "circuitBreakers",
        "How long the open gateway breaker skips the gateway, fleet-wide, before one trial call (one for the "
        "fleet) checks it again.",
        default="30s",
    ),
    Var(
        "PAYMENT_UNPAID_CANCEL_AFTER",
        "duration",
        "optional",
        "circuitBreakers",
        "retry_payments cancels (and restocks) an order still unpaid this long after checkout; at least 10m.",
        default="24h",
    ),
    Var("DB_CONNECT_TIMEOUT", "int", "optional", "database", "PostgreSQL connect timeout, whole seconds.", default="2"),
    Var(
        "DB_REPLICA_MAX_LAG",
        "duration",
        "optional",
        "database",
        "A replica further behind than this leaves read rotation.",
        default="30s",
    ),
    Var(
        "DB_QUERY_TIMEOUT",
        "duration",
        "optional",
        "database",
        (
            "Deadline for one query: a statement still running then is cancelled (a node that answers stays up); "
            "if the cancel does not take within 0.5 s the connection is cut and the node marked down (a hung node)."
        ),
        default="5s",
    ),
    Var(
        "DB_FAILOVER_MODE",
        "choice",
        "optional",
        "database",
        "resilient, or naive (the seed's try-replica-then-primary per request; for benchmarks only).",
        default="resilient",
        choices=("resilient", "naive"),
    ),
    Var(
        "RATELIMIT_ENABLED",
        "bool",
        "optional",
        "rateLimit",
        "false turns every limit off (load tests).",
        default="true",
    ),
    Var(
        "TRUSTED_PROXY_COUNT",
        "int",
        "optional",
        "rateLimit",
        "Proxies in front whose X-Forwarded-For entries are trusted for the client IP.",
        default="0",
    ),
    Var(
        "RATELIMIT_API",
        "rate",
        "optional",
        "rateLimit",
        "Every API request, per user when authenticated, else per client IP. A rate is count/period "
        "(10/m, 1000/h, 50/10m); off turns one scope off.",
        default="300/m",
    ),
    Var("RATELIMIT_LOGIN", "rate", "optional", "rateLimit", "Log-ins (token obtain) per client IP.", default="10/m"),
    Var(
        "RATELIMIT_LOGIN_USER",
        "rate",
        "optional",
        "rateLimit",
        "Log-ins per username, whatever the IP (brute force on one account).",
        default="10/m",
    ),
    Var(
        "RATELIMIT_ADMIN_LOGIN",
        "rate",
        "optional",
        "rateLimit",
        "Admin log-ins and staff password changes per client IP (counted exactly; an HTML 429 page).",
        default="10/m",
    ),
    Var(
        "RATELIMIT_ADMIN_LOGIN_USER",
        "rate",
        "optional",
        "rateLimit",
        "Admin log-ins per username whatever the IP, and staff password changes per user.",
        default="10/m",
    ),
    Var(
        "RATELIMIT_OTP",
        "rate",
        "optional",
        "rateLimit",
        "Second-factor (OTP) attempts per staff user (counted exactly, whatever django-otp's own throttle holds).",
        default="10/m",
    ),
    Var("RATELIMIT_REGISTER", "rate", "optional", "rateLimit", "Sign-ups per client IP.", default="20/h"),
    Var("RATELIMIT_REFRESH", "rate", "optional", "rateLimit", "Token refreshes per client IP.", default="60/m"),
    Var("RATELIMIT_CHECKOUT", "rate", "optional", "rateLimit", "Checkouts per user.", default="10/m"),
    Var(
        "REDIS_CONNECT_TIMEOUT_MS",
        "int",
        "optional",
        "rateLimit",
        "Redis connect timeout in milliseconds; a failure switches this process to memory until Redis answers.",
        default="250",
    ),
    Var(
        "REDIS_SOCKET_TIMEOUT_MS",
        "int",
        "optional",
        "rateLimit",
        "Redis read/write timeout in milliseconds (redis-py retries are off: one timeout, then memory).",
        default="250",
    ),
    Var("WEB_CONCURRENCY", "int", "optional", "serving", "gunicorn worker processes.", default="2"),
    Var("PORT", "int", "optional", "serving", "Port gunicorn listens on (127.0.0.1).", default="8000"),
    Var(
        "WEB_THREADS",
        "int",
        "optional",
        "serving",
        "gunicorn threads per worker (2-64); every SERVING_LIMIT_<CLASS> but ops must stay below it.",
        default="8",
    ),
    Var(
        "SERVING_POOL",
        "choice",
        "optional",
        "serving",
        "Serve one traffic class only (with ops): catalog, auth, checkout, admin or ops; other paths answer 404. "
        "Unset: every class.",
        choices=("catalog", "auth", "checkout", "admin", "ops"),
    ),
    *_serving_vars(),
    Var(
        "LOG_DIR",
        "str",
        "optional",
        "logging",
        "Also write the JSON log to LOG_DIR/bulwark.log, rotated by size and daily, shared safely by every worker.",
    ),
    _secret(
        "METRICS_TOKEN",
        "optional",
        "telemetry",
        "Bearer token that opens /metrics from any address (without it: loopback and METRICS_ALLOWED_NETWORKS only).",
    ),
    Var(
        "METRICS_ALLOWED_NETWORKS",
        "list",
        "optional",
        "telemetry",
        "Comma-separated networks (CIDR) whose clients may scrape /metrics without a token; loopback always may.",
    ),
    Var(
        "LOG_LEVEL",
        "choice",
        "optional",
        "logging",
        "DEBUG, INFO, WARNING or ERROR.",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Var(
        "DOTENV_FILE",
        "str",
        "optional",
        "configuration",
        "The .env file to read (default .env in the project root; `none` reads none). The environment wins.",
    ),
)

SCHEMA_BY_NAME: dict[str, Var] = {var.name: var for var in SCHEMA}
