"""What a configuration leaves as a single point of failure, area by area (the seed's eight).

Reads the typed configuration only: no connection is opened. The live health checks build on the
same areas and add what only a running system can tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from resilience.config.loader import Config
from resilience.config.reader import Finding, format_duration
from resilience.config.schema import AREAS, CRITICAL_AREAS, SCHEMA

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Line:
    level: Level
    variable: str
    message: str


@dataclass
class AreaReport:
    area: str
    critical: bool
    healthy: bool = True
    detail: str = ""
    lines: list[Line] = field(default_factory=list)

    def add(self, level: Level, variable: str, message: str) -> None:
        self.lines.append(Line(level, variable, message))

    def at_risk(self, detail: str) -> None:
        self.healthy = False
        self.detail = detail


def _node(entry: dict) -> str:
    """host:port/name of a DATABASES entry: never its user or password."""
    hosts = zip(str(entry["HOST"]).split(","), str(entry["PORT"]).split(","), strict=False)
    return ",".join(f"{host}:{port}" for host, port in hosts) + f"/{entry['NAME']}"


def _database(config: Config, report: AreaReport) -> None:
    report.add("ok", "DATABASE_URL", f"primary {_node(config.database)}, connect timeout {config.db_connect_timeout}s")
    for replica in config.replicas:
        report.add("ok", "DATABASE_REPLICA_URLS", f"replica {_node(replica)}")
    if "," in str(config.database["HOST"]):
        report.add("ok", "DATABASE_URL", "several hosts: a promoted replica takes writes without a restart")
    if config.database_has_failover:
        report.detail = f"{len(config.replicas)} replica(s); reads continue when the primary fails"
    else:
        report.at_risk("single PostgreSQL host: no replica to read from when the primary fails")


def _authentication(config: Config, report: AreaReport) -> None:
    lifetimes = (
        f"access {format_duration(config.jwt_access_lifetime)}, refresh {format_duration(config.jwt_refresh_lifetime)}"
    )
    report.add("ok", "JWT_SECRET", f"active signing key set ({lifetimes})")
    if config.jwt_secret_prev:
        report.add("ok", "JWT_SECRET_PREV", "previous key accepted: tokens it signed stay valid")
    report.detail = "signing keys rotate without logging users out"


def _configuration(config: Config, report: AreaReport) -> None:
    report.add("ok", "SECRET_KEY", "set and strong")
    report.add("ok", "DJANGO_ENV", config.django_env)
    report.detail = "every variable validated at start-up; a bad one stops every entry point"


def _logging(config: Config, report: AreaReport) -> None:
    report.add("ok", "LOG_LEVEL", f"{config.log_level}, to standard output")
    report.detail = "logs to standard output, collected by the process manager"


def _telemetry(config: Config, report: AreaReport) -> None:
    for endpoint in config.otlp_endpoints:
        report.add("ok", "OTEL_EXPORTER_OTLP_ENDPOINTS", f"traces to {endpoint}")
    if len(config.otlp_endpoints) < 2:
        report.at_risk(f"{len(config.otlp_endpoints)} trace endpoint(s): traces stop when it is down")
    else:
        report.detail = f"{len(config.otlp_endpoints)} trace endpoints"


def _serving(config: Config, report: AreaReport) -> None:
    report.add("ok", "WEB_CONCURRENCY", f"{config.web_concurrency} gunicorn worker(s) on port {config.port}")
    if config.is_production:
        report.add("ok", "ALLOWED_HOSTS", ", ".join(config.allowed_hosts))
    if config.web_concurrency < 2:
        report.at_risk("one worker process: when it dies or stalls, nothing serves")
    else:
        report.detail = f"{config.web_concurrency} workers; one failing leaves the others serving"


def _rate_limit(config: Config, report: AreaReport) -> None:
    report.add("ok", "RATELIMIT_ENABLED", "limits on" if config.ratelimit_enabled else "limits OFF (load tests only)")
    if config.redis_sentinels:
        count = len(config.redis_sentinels)
        report.add(
            "ok" if count >= 3 else "warning",
            "REDIS_SENTINELS",
            f"{count} Sentinel(s) name the master; a failover is followed without a restart (counted in memory "
            "while no master is named)" + ("" if count >= 3 else "; run at least three for a quorum"),
        )
        report.detail = "Redis behind Sentinels; when it fails, each worker counts in its own memory until it is back"
    elif config.redis_url:
        report.add(
            "ok",
            "REDIS_URL",
            f"set: a shared store for counters and the cache; timeouts connect {config.redis_connect_timeout_ms} ms, "
            f"socket {config.redis_socket_timeout_ms} ms",
        )
        report.detail = "Redis configured; when it fails, each worker counts in its own memory until it is back"
    else:
        report.at_risk("no Redis: counters and the cache live in each process only")


def _circuit_breakers(config: Config, report: AreaReport) -> None:
    gateway = config.payment_gateway
    if config.payment_gateway_url:
        report.add(
            "ok",
            "PAYMENT_GATEWAY_URL",
            f"set: payments collected at checkout; timeouts connect {gateway['connect_timeout']:g}s, "
            f"read {gateway['read_timeout']:g}s",
        )
        report.add(
            "ok",
            "PAYMENT_GATEWAY_BREAKER_FAILURES",
            f"breaker opens after {gateway['breaker_failures']} failed calls, "
            f"trial call after {gateway['breaker_reset']:g}s",
        )
        report.detail = "gateway down: orders kept pending_payment behind an open breaker, collected later"
    else:
        report.add("ok", "PAYMENT_GATEWAY_URL", "not set: orders stay pending_payment, checkout calls nothing outside")
        report.detail = "checkout never waits on an external service"


_ASSESSORS = {
    "database": _database,
    "authentication": _authentication,
    "configuration": _configuration,
    "logging": _logging,
    "telemetry": _telemetry,
    "serving": _serving,
    "rateLimit": _rate_limit,
    "circuitBreakers": _circuit_breakers,
}


def _empty_reports() -> dict[str, AreaReport]:
    return {area: AreaReport(area=area, critical=area in CRITICAL_AREAS) for area in AREAS}


def _add_findings(reports: dict[str, AreaReport], findings: list[Finding]) -> None:
    for finding in findings:
        reports[finding.area].add(finding.severity, finding.name, finding.message)


def assess_config(config: Config) -> dict[str, AreaReport]:
    """Each area's report for a valid configuration."""
    reports = _empty_reports()
    for area, assess in _ASSESSORS.items():
        assess(config, reports[area])
    _add_findings(reports, config.warnings)
    return reports


def assess_invalid(findings: list[Finding], provided: frozenset[str]) -> dict[str, AreaReport]:
    """Each area's report when the configuration is invalid: its errors, warnings, and what was set."""
    reports = _empty_reports()
    named = {finding.name.removesuffix("_FILE") for finding in findings}
    for var in SCHEMA:
        if var.name in provided and var.name not in named:
            reports[var.area].add("ok", var.name, "set")
    _add_findings(reports, findings)
    for area, report in reports.items():
        errors = [line for line in report.lines if line.level == "error"]
        if errors:
            report.at_risk(f"{len(errors)} invalid or missing variable(s)")
        elif any(finding.spof and finding.area == area for finding in findings):
            report.at_risk("a recommended variable is missing")
    return reports
