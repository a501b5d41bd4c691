"""Read, validate and type the environment in one pass.

A problem never stops the pass: every variable is checked and all problems are reported
together, so an operator fixes a broken deployment in one round. Secrets may come from
``NAME_FILE``; values are taken literally (no ``$VAR`` interpolation: generated secrets
often contain ``$``). A ``.env`` file in the project root is read when present; the real
environment wins over it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from resilience.config.schema import SCHEMA, SCHEMA_BY_NAME

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}


class ConfigError(Exception):
    """The environment is invalid; ``problems`` lists every reason, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self.report())

    def report(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return (
            f"Bulwark cannot start: the environment has {len(self.problems)} problem(s).\n{lines}\n"
            "Set these variables in the environment or in .env (see .env.example and the README), then start again."
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
    django_env: str
    debug: bool
    allowed_hosts: list[str]
    redis_url: str | None
    payment_gateway_url: str | None
    otlp_endpoints: list[str]
    db_connect_timeout: int
    web_concurrency: int
    port: int
    log_level: str
    warnings: list[str] = field(default_factory=list)

    @property
    def is_production(self) -> bool:
        return self.django_env == "production"


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes; values taken literally."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def dotenv_path(environ: Mapping[str, str]) -> Path:
    """The ``.env`` file to read: ``DOTENV_FILE`` when set (``none`` reads none), else ``.env`` in the project root."""
    chosen = environ.get("DOTENV_FILE", "").strip()
    if chosen.lower() == "none":
        return Path("/nonexistent/.env")
    return Path(chosen) if chosen else PROJECT_ROOT / ".env"


class _Reader:
    """Collects problems while reading typed values."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def raw(self, name: str) -> str | None:
        file_name = f"{name}_FILE"
        if file_name in self.environ and self.environ[file_name].strip():
            path = Path(self.environ[file_name].strip())
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problems.append(f"{file_name}: cannot read {path} ({exc.strerror}); give a readable file.")
                return None
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        var = SCHEMA_BY_NAME[name]
        if value is None:
            if var.level == "required":
                self.problems.append(f"{name}: missing. {var.help}")
            return var.default
        return value

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.raw(name)
        var = SCHEMA_BY_NAME[name]
        value = value if value is not None else var.default
        try:
            number = int(value or "")
        except ValueError:
            self.problems.append(f"{name}: {value!r} is not a whole number. {var.help}")
            return int(var.default or 0)
        if number < minimum:
            self.problems.append(f"{name}: {number} is below the minimum {minimum}. {var.help}")
        return number

    def boolean(self, name: str) -> bool:
        value = (self.raw(name) or SCHEMA_BY_NAME[name].default or "false").lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name}: {value!r} is not a boolean; use true or false.")
        return False

    def duration(self, name: str) -> timedelta:
        var = SCHEMA_BY_NAME[name]
        value = self.raw(name) or var.default or ""
        match = _DURATION.match(value)
        if not match or int(match.group(1)) == 0:
            self.problems.append(f"{name}: {value!r} is not a duration; use e.g. 15m, 24h, 7d or seconds.")
            match = _DURATION.match(var.default or "0")
            assert match is not None
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])

    def choice(self, name: str) -> str:
        var = SCHEMA_BY_NAME[name]
        value = self.raw(name) or var.default or ""
        if value not in var.choices:
            self.problems.append(f"{name}: {value!r} is not one of {', '.join(var.choices)}.")
            return var.default or ""
        return value

    def items(self, name: str) -> list[str]:
        value = self.raw(name)
        return [item.strip() for item in value.split(",") if item.strip()] if value else []


def _parse_database_url(name: str, url: str, reader: _Reader, connect_timeout: int) -> dict[str, Any] | None:
    """A libpq URL (multi-host allowed) as a Django DATABASES entry; None and a problem when invalid."""
    parts = urlsplit(url)
    if parts.scheme not in _POSTGRES_SCHEMES or not parts.netloc or not parts.path.strip("/"):
        reader.problems.append(
            f"{name}: not a PostgreSQL URL; use postgres://user:password@host:5432/dbname "
            "(several hosts allowed: host1:5432,host2:5432)."
        )
        return None
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts: list[str] = []
    ports: list[str] = []
    for hostport in hostlist.split(","):
        host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
        if not host or (port and not port.isdigit()):
            reader.problems.append(f"{name}: host {hostport!r} is not host or host:port.")
            return None
        hosts.append(host)
        ports.append(port or "5432")
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    options.setdefault("connect_timeout", connect_timeout)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(user),
        "PASSWORD": unquote(password),
        "HOST": ",".join(hosts),
        "PORT": ",".join(ports),
        "OPTIONS": options,
    }


def _database(reader: _Reader, connect_timeout: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    url = reader.raw("DATABASE_URL")
    host = reader.raw("DB_HOST") or reader.raw("DB_HOST_PRIMARY")
    discrete = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": reader.raw("DB_NAME") or "",
        "USER": reader.raw("DB_USERNAME") or "",
        "PASSWORD": reader.raw("DB_PASSWORD") or "",
        "PORT": str(reader.integer("DB_PORT", minimum=1)),
        "OPTIONS": {"connect_timeout": connect_timeout},
    }
    primary: dict[str, Any] | None = None
    if url:
        if host:
            reader.warnings.append("DATABASE_URL and DB_HOST are both set: DATABASE_URL wins.")
        primary = _parse_database_url("DATABASE_URL", url, reader, connect_timeout)
    elif host:
        missing = [n for n, key in (("DB_NAME", "NAME"), ("DB_USERNAME", "USER")) if not discrete[key]]
        if missing:
            reader.problems.append(f"DB_HOST is set but {', '.join(missing)} missing; give them or DATABASE_URL.")
        primary = {**discrete, "HOST": host}
    else:
        reader.problems.append(f"DATABASE_URL: missing. {SCHEMA_BY_NAME['DATABASE_URL'].help}")

    replicas: list[dict[str, Any]] = []
    replica_urls = reader.items("DATABASE_REPLICA_URLS")
    for index, replica_url in enumerate(replica_urls, start=1):
        parsed = _parse_database_url(f"DATABASE_REPLICA_URLS (entry {index})", replica_url, reader, connect_timeout)
        if parsed:
            replicas.append(parsed)
    replica_host = reader.raw("DB_HOST_REPLICA")
    if not replica_urls and replica_host and primary:
        replicas.append({**primary, "HOST": replica_host, "PORT": discrete["PORT"]})
    if primary:
        for index, replica in enumerate(replicas, start=1):
            if (replica["HOST"], replica["PORT"], replica["NAME"]) == (
                primary["HOST"],
                primary["PORT"],
                primary["NAME"],
            ):
                reader.problems.append(f"DATABASE_REPLICA_URLS (entry {index}) is the primary itself; name a replica.")
    return primary, replicas


def load_config(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Config:
    """Validate the environment (plus ``.env``) and return it typed, or raise ConfigError listing every problem."""
    if environ is None:
        environ = {**read_dotenv(dotenv or dotenv_path(os.environ)), **os.environ}
    reader = _Reader(environ)

    secret_key = reader.text("SECRET_KEY") or ""
    if secret_key and (len(secret_key) < 50 or len(set(secret_key)) < 5):
        reader.problems.append("SECRET_KEY: too weak; it needs at least 50 characters and at least 5 distinct ones.")
    jwt_secret = reader.text("JWT_SECRET") or ""
    if jwt_secret and len(jwt_secret.encode()) < 32:
        reader.problems.append("JWT_SECRET: too short; it needs at least 32 bytes (e.g. `openssl rand -base64 48`).")
    connect_timeout = reader.integer("DB_CONNECT_TIMEOUT", minimum=1)
    primary, replicas = _database(reader, connect_timeout)

    redis_url = reader.raw("REDIS_URL")
    if redis_url and urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        reader.problems.append("REDIS_URL: not a Redis URL; use redis://host:6379/0 or rediss://...")
    gateway = reader.raw("PAYMENT_GATEWAY_URL")
    if gateway and (urlsplit(gateway).scheme not in {"http", "https"} or not urlsplit(gateway).netloc):
        reader.problems.append("PAYMENT_GATEWAY_URL: not an http(s) URL.")
    known_problems = len(reader.problems)
    django_env = reader.choice("DJANGO_ENV")
    env_is_valid = len(reader.problems) == known_problems  # an invalid DJANGO_ENV adds no knock-on problems
    debug = reader.boolean("DEBUG")
    allowed_hosts = reader.items("ALLOWED_HOSTS")
    if django_env == "development" and not allowed_hosts:
        allowed_hosts = ["127.0.0.1", "localhost", "[::1]"]
    if django_env == "production" and env_is_valid and not allowed_hosts:
        reader.problems.append("ALLOWED_HOSTS: missing; production needs the host names it serves (comma-separated).")

    config = Config(
        secret_key=secret_key,
        database=primary or {},
        replicas=replicas,
        jwt_secret=jwt_secret,
        jwt_secret_prev=reader.raw("JWT_SECRET_PREV"),
        jwt_access_lifetime=reader.duration("JWT_EXPIRES_IN"),
        jwt_refresh_lifetime=reader.duration("JWT_REFRESH_EXPIRES_IN"),
        django_env=django_env,
        debug=debug and django_env == "development",
        allowed_hosts=allowed_hosts,
        redis_url=redis_url,
        payment_gateway_url=gateway.rstrip("/") if gateway else None,
        otlp_endpoints=reader.items("OTEL_EXPORTER_OTLP_ENDPOINTS"),
        db_connect_timeout=connect_timeout,
        web_concurrency=reader.integer("WEB_CONCURRENCY", minimum=1),
        port=reader.integer("PORT", minimum=1),
        log_level=reader.choice("LOG_LEVEL"),
        warnings=reader.warnings,
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    provided = {"DATABASE_REPLICA_URLS": bool(replicas)}
    for var in SCHEMA:
        if var.level == "recommended" and not provided.get(var.name, bool(reader.raw(var.name))):
            config.warnings.append(f"{var.name} is not set: {var.area} has a single point of failure. {var.help}")
    return config
