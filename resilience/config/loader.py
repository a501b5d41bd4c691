"""Read, validate and type the whole environment in one pass.

A problem never stops the pass: every variable is checked and all problems are reported together,
so an operator fixes a broken deployment in one round. A ``.env`` file is read when present (the
real environment wins; django-environ's parser, into a dict of its own: ``os.environ`` is never written);
a ``.env`` that cannot be read, or a line in it that is not ``NAME=value``, is a problem like any other.
Nothing here opens a connection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from resilience.config.database import read_databases
from resilience.config.env import BulwarkEnv, Dotenv, dotenv_read
from resilience.config.ratelimit import Rate, read_rates
from resilience.config.reader import EnvReader, Finding
from resilience.config.schema import SCHEMA
from resilience.config.serving import ServingConfig, read_serving

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEVELOPMENT_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


class ConfigError(Exception):
    """The environment is invalid; ``findings`` holds every error (and the warnings found on the way)."""

    def __init__(self, findings: list[Finding], provided: frozenset[str] = frozenset()) -> None:
        self.findings = findings
        self.provided = provided
        super().__init__(self.report())

    @property
    def problems(self) -> list[str]:
        return [str(finding) for finding in self.findings if finding.severity == "error"]

    def report(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return (
            f"Bulwark cannot start: the environment has {len(self.problems)} problem(s).\n{lines}\n"
            "Set these variables in the environment or in .env (see .env.example and the README; "
            "`python manage.py validate_env` shows the whole analysis), then start again."
        )


@dataclass(frozen=True)
class Config:
    """The validated configuration, typed."""

    secret_key: str
    database: dict[str, Any]
    replicas: list[dict[str, Any]]
    jwt_secret: str
    jwt_secret_prev: str | None
    jwt_access_lifetime: timedelta
    jwt_refresh_lifetime: timedelta
    jwt_leeway: timedelta
    jwt_rotation_max_age: timedelta
    staff_session_idle: timedelta
    jwt_kidless_until: datetime | None  # tokens without a kid verify against JWT_SECRET until then
    jwt_jwks_max_age: timedelta
    secret_key_fallbacks: list[str]
    django_env: str
    debug: bool
    allowed_hosts: list[str]
    ssl_redirect: bool
    proxy_ssl_header: tuple[str, str] | None
    redis_url: str | None  # with Sentinels: redis://<master name>/0, the location django-redis's Sentinel pool takes
    redis_sentinels: list[tuple[str, int]]  # empty: REDIS_URL (or no Redis)
    payment_gateway_url: str | None
    payment_gateway: dict[str, Any]  # timeouts and breaker settings, see _payment_gateway
    otlp_endpoints: list[str]
    db_connect_timeout: int
    db_replica_max_lag: timedelta
    db_query_timeout: timedelta
    db_failover_mode: str
    ratelimit_enabled: bool
    ratelimit_rates: dict[str, Rate | None]  # scope -> (count, seconds); None = off
    trusted_proxy_count: int
    redis_connect_timeout_ms: int
    redis_socket_timeout_ms: int
    web_concurrency: int
    serving: ServingConfig
    port: int
    log_level: str
    log_dir: str | None
    metrics_token: str | None
    metrics_allowed_networks: list[str]
    warnings: list[Finding] = field(default_factory=list)
    provided: frozenset[str] = frozenset()  # the variables that were set (names only)

    @property
    def is_production(self) -> bool:
        return self.django_env == "production"

    @property
    def database_has_failover(self) -> bool:
        """A second node can take over: a replica, or a multi-host primary URL."""
        return bool(self.replicas) or "," in str(self.database.get("HOST", ""))


def dotenv_path(environ: Mapping[str, str]) -> Path | None:
    """The ``.env`` file to read: ``DOTENV_FILE`` when set (``none``: no file), else ``.env`` in the project root."""
    chosen = (BulwarkEnv(environ).str("DOTENV_FILE", default=None) or "").strip()
    if chosen.lower() == "none":
        return None
    return Path(chosen) if chosen else PROJECT_ROOT / ".env"


def _read_environment() -> tuple[dict[str, str], Dotenv]:
    dotenv = dotenv_read(dotenv_path(os.environ))
    # The real environment wins over the file (as django-environ's read_env does, without writing os.environ).
    return {**dotenv.values, **os.environ}, dotenv


def environment() -> dict[str, str]:
    """The process environment over the ``.env`` file's values.

    A ``DOTENV_FILE`` that names no file is kept visible: :func:`load_config` reports it.
    """
    return _read_environment()[0]


_SENTINEL_MASTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _redis_sentinels(reader: EnvReader) -> list[tuple[str, int]]:
    """REDIS_SENTINELS as (host, port) pairs; REDIS_SENTINEL_MASTER checked (it becomes the location's host)."""
    sentinels: list[tuple[str, int]] = []
    for item in reader.items("REDIS_SENTINELS"):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            reader.error(
                "REDIS_SENTINELS",
                f"{item!r} is not host:port; give each Sentinel as host:port (e.g. 10.0.0.5:26379), comma-separated.",
            )
            return []
        sentinels.append((host, int(port)))
    master = reader.text("REDIS_SENTINEL_MASTER") or ""
    if sentinels and not _SENTINEL_MASTER_NAME.match(master):
        reader.error(
            "REDIS_SENTINEL_MASTER",
            "is not a Sentinel master name Bulwark accepts: letters, digits, '.', '_' or '-', up to 64 characters "
            "(the name in the Sentinels' `sentinel monitor <name> ...` line).",
        )
        return []
    return sentinels


def _proxy_ssl_header(reader: EnvReader) -> tuple[str, str] | None:
    value = reader.raw("SECURE_PROXY_SSL_HEADER")
    if value is None:
        return None
    header, sep, expected = value.replace("=", ":", 1).partition(":")
    if not sep or not header.strip() or not expected.strip():
        reader.error("SECURE_PROXY_SSL_HEADER", f"{value!r} is not Header:value, e.g. X-Forwarded-Proto:https.")
        return None
    return "HTTP_" + header.strip().upper().replace("-", "_"), expected.strip()


def _telemetry_endpoints(reader: EnvReader) -> list[str]:
    endpoints = []
    for endpoint in reader.items("OTEL_EXPORTER_OTLP_ENDPOINTS"):
        if reader.url("OTEL_EXPORTER_OTLP_ENDPOINTS", {"http", "https"}, "http://collector:4318", value=endpoint):
            endpoints.append(endpoint.rstrip("/"))
    jaeger = reader.url("JAEGER_ENDPOINT", {"http", "https"}, "http://jaeger:4318")
    if jaeger:
        parts = urlsplit(jaeger)
        if parts.port == 14268 or parts.path.rstrip("/") == "/api/traces":
            reader.warning(
                "JAEGER_ENDPOINT",
                "points at Jaeger's old Thrift collector (:14268/api/traces), which "
                "OTLP exporters cannot speak; it is not used. Give Jaeger's OTLP port, e.g. http://jaeger:4318.",
            )
        elif jaeger.rstrip("/") not in endpoints:
            endpoints.append(jaeger.rstrip("/"))
            reader.warning("JAEGER_ENDPOINT", "read as one OTLP endpoint; prefer OTEL_EXPORTER_OTLP_ENDPOINTS.")
    if reader.raw("PROMETHEUS_PORT"):
        reader.warning("PROMETHEUS_PORT", "not used: Bulwark opens no separate metrics port.")
    return endpoints


def _payment_gateway(reader: EnvReader) -> dict[str, Any]:
    """Gateway timeouts (seconds) and breaker settings; a checkout must finish well within gunicorn's 30 s."""
    connect = reader.duration("PAYMENT_GATEWAY_CONNECT_TIMEOUT").total_seconds()
    read = reader.duration("PAYMENT_GATEWAY_TIMEOUT").total_seconds()
    if connect > 10:
        reader.error("PAYMENT_GATEWAY_CONNECT_TIMEOUT", f"{connect:g}s is too long; use at most 10s.")
    if read > 20:
        reader.error(
            "PAYMENT_GATEWAY_TIMEOUT",
            f"{read:g}s is too long: a hung gateway would hold checkouts past gunicorn's worker timeout; "
            "use at most 20s.",
        )
    unpaid = reader.duration("PAYMENT_UNPAID_CANCEL_AFTER")
    if unpaid < timedelta(minutes=10):
        reader.error(
            "PAYMENT_UNPAID_CANCEL_AFTER",
            "too short: orders would be cancelled while their payment may still go through; use at least 10m.",
        )
    return {
        "connect_timeout": connect,
        "read_timeout": read,
        "breaker_failures": reader.integer("PAYMENT_GATEWAY_BREAKER_FAILURES", minimum=1, maximum=100),
        "breaker_reset": reader.duration("PAYMENT_GATEWAY_BREAKER_RESET").total_seconds(),
        "unpaid_cancel_after": unpaid,
    }


def _check_kinds(reader: EnvReader) -> None:
    """Every other variable that is set must still be of its declared kind (e.g. PROMETHEUS_PORT a number)."""
    for var in SCHEMA:
        value = reader.raw(var.name)
        if value is None or reader.has_error(var.name):
            continue
        if var.kind == "int":
            reader.integer(var.name, minimum=0)
        elif var.kind == "bool":
            reader.boolean(var.name)
        elif var.kind == "duration":
            reader.duration(var.name)


def _jwt_leeway(reader: EnvReader) -> timedelta:
    leeway = reader.duration("JWT_LEEWAY")
    if leeway > timedelta(seconds=60):
        reader.error("JWT_LEEWAY", "too large; at most 60s of clock skew is tolerated (e.g. 30s).")
    return leeway


def _kidless_until(reader: EnvReader) -> datetime | None:
    value = reader.text("JWT_KIDLESS_UNTIL")
    if not value:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        reader.error("JWT_KIDLESS_UNTIL", f"{value!r} is not an ISO-8601 instant; use e.g. 2027-01-31T00:00:00Z.")
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)  # a bare date-time is UTC


def _spof_warnings(reader: EnvReader, config: Config) -> None:
    if not config.database_has_failover:
        reader.warning(
            "DATABASE_REPLICA_URLS",
            "not set: the database has a single point of failure (no replica "
            "to read from when the primary fails). Give DATABASE_REPLICA_URLS or DB_HOST_REPLICA.",
            spof=True,
        )
    if not config.redis_url:
        reader.warning("REDIS_URL", "not set: rate limits and the cache live in each process's memory only.", spof=True)
    elif len(config.redis_sentinels) == 1:
        reader.warning(
            "REDIS_SENTINELS",
            "names one Sentinel: it is a single point of failure of its own, and one Sentinel cannot reach a quorum "
            "to fail the master over. Run at least three, on separate hosts.",
            spof=True,
        )
    if not config.otlp_endpoints:
        reader.warning("OTEL_EXPORTER_OTLP_ENDPOINTS", "not set: no traces are exported.", spof=True)


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Validate the environment (plus ``.env``) and return it typed, or raise ConfigError listing every problem.

    With no ``environ``, the process environment and the ``.env`` file are read, and a problem with the file
    (unreadable, a line that is not ``NAME=value``) is reported too; a given ``environ`` is taken as it is.
    """
    dotenv = None
    if environ is None:
        environ, dotenv = _read_environment()
    reader = EnvReader(environ)
    chosen = reader.raw("DOTENV_FILE")
    if chosen and chosen.lower() != "none" and not Path(chosen).is_file():
        reader.error("DOTENV_FILE", f"{chosen} is not a file; point it at your .env file, or use none.")
    elif dotenv is not None and dotenv.problem:
        reader.error("DOTENV_FILE", dotenv.problem)

    secret_key = reader.text("SECRET_KEY") or ""
    if secret_key and (len(secret_key) < 50 or len(set(secret_key)) < 5 or secret_key.startswith("django-insecure-")):
        reader.error(
            "SECRET_KEY",
            "too weak; it needs at least 50 characters, at least 5 distinct ones, and no "
            "'django-insecure-' prefix (generate one: python -c 'import secrets; print(secrets.token_urlsafe(64))').",
        )
    jwt_secret = reader.text("JWT_SECRET") or ""
    jwt_secret_prev = reader.raw("JWT_SECRET_PREV")
    for name, secret in (("JWT_SECRET", jwt_secret), ("JWT_SECRET_PREV", jwt_secret_prev)):
        if secret and len(secret.encode()) < 32:
            reader.error(name, "too short; it needs at least 32 bytes (e.g. `openssl rand -base64 48`).")
    if jwt_secret and jwt_secret == jwt_secret_prev:
        reader.warning("JWT_SECRET_PREV", "equals JWT_SECRET; it adds nothing.")
    connect_timeout = reader.integer("DB_CONNECT_TIMEOUT", minimum=1, maximum=60)
    primary, replicas = read_databases(reader, connect_timeout)

    redis_url = reader.url("REDIS_URL", {"redis", "rediss", "unix"}, "redis://host:6379/0")
    redis_sentinels = _redis_sentinels(reader)
    if redis_sentinels:
        if reader.raw("REDIS_URL"):
            reader.error(
                "REDIS_SENTINELS",
                "is set together with REDIS_URL; give one: REDIS_URL for one Redis, REDIS_SENTINELS (and "
                "REDIS_SENTINEL_MASTER) to follow the master the Sentinels name.",
            )
        redis_url = f"redis://{reader.text('REDIS_SENTINEL_MASTER') or 'mymaster'}/0"
    gateway = reader.url("PAYMENT_GATEWAY_URL", {"http", "https"}, "https://payments.example.com")
    django_env, env_is_valid = reader.choice("DJANGO_ENV")
    debug = reader.boolean("DEBUG")
    allowed_hosts = reader.items("ALLOWED_HOSTS")
    if django_env == "development" and not allowed_hosts:
        allowed_hosts = DEVELOPMENT_HOSTS
    if django_env == "production" and env_is_valid:  # an invalid DJANGO_ENV adds no knock-on problems
        if not allowed_hosts:
            reader.error("ALLOWED_HOSTS", "missing; production needs the host names it serves (comma-separated).")
        if debug:
            reader.error(
                "DEBUG",
                "true is refused in production: it shows internals to every visitor. "
                "Use DJANGO_ENV=development on a development machine.",
            )

    config = Config(
        secret_key=secret_key,
        database=primary or {},
        replicas=replicas,
        jwt_secret=jwt_secret,
        jwt_secret_prev=jwt_secret_prev,
        jwt_access_lifetime=reader.duration("JWT_EXPIRES_IN"),
        jwt_refresh_lifetime=reader.duration("JWT_REFRESH_EXPIRES_IN"),
        jwt_leeway=_jwt_leeway(reader),
        jwt_rotation_max_age=reader.duration("JWT_ROTATION_MAX_AGE"),
        staff_session_idle=reader.duration("STAFF_SESSION_IDLE"),
        jwt_kidless_until=_kidless_until(reader),
        jwt_jwks_max_age=reader.duration("JWT_JWKS_MAX_AGE"),
        secret_key_fallbacks=reader.items("SECRET_KEY_FALLBACKS"),
        django_env=django_env,
        debug=debug and django_env == "development",
        allowed_hosts=allowed_hosts,
        ssl_redirect=reader.boolean("SECURE_SSL_REDIRECT") and django_env == "production",
        proxy_ssl_header=_proxy_ssl_header(reader),
        redis_url=redis_url,
        redis_sentinels=redis_sentinels,
        payment_gateway_url=gateway.rstrip("/") if gateway else None,
        payment_gateway=_payment_gateway(reader),
        otlp_endpoints=_telemetry_endpoints(reader),
        db_connect_timeout=connect_timeout,
        db_replica_max_lag=reader.duration("DB_REPLICA_MAX_LAG"),
        db_query_timeout=reader.duration("DB_QUERY_TIMEOUT"),
        db_failover_mode=reader.choice("DB_FAILOVER_MODE")[0],
        ratelimit_enabled=reader.boolean("RATELIMIT_ENABLED"),
        ratelimit_rates=read_rates(reader),
        trusted_proxy_count=reader.integer("TRUSTED_PROXY_COUNT", minimum=0, maximum=10),
        redis_connect_timeout_ms=reader.integer("REDIS_CONNECT_TIMEOUT_MS", minimum=10, maximum=10_000),
        redis_socket_timeout_ms=reader.integer("REDIS_SOCKET_TIMEOUT_MS", minimum=10, maximum=10_000),
        web_concurrency=reader.integer("WEB_CONCURRENCY", minimum=1, maximum=128),
        serving=read_serving(reader),
        port=reader.integer("PORT", minimum=1, maximum=65535),
        log_level=reader.choice("LOG_LEVEL")[0],
        log_dir=reader.text("LOG_DIR"),
        metrics_token=reader.text("METRICS_TOKEN"),
        metrics_allowed_networks=reader.items("METRICS_ALLOWED_NETWORKS"),
        provided=frozenset(reader.present),
    )
    _check_kinds(reader)
    _spof_warnings(reader, config)
    if any(finding.severity == "error" for finding in reader.findings):
        raise ConfigError(reader.findings, frozenset(reader.present))
    config.warnings.extend(reader.findings)
    return config
