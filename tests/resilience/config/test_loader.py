"""The environment loader: every problem reported at once, fallbacks, typed values, no secret leaked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilience.config import ConfigError, load_config, read_dotenv
from resilience.config.loader import dotenv_path, environment

SECRET_KEY = "k" * 40 + "abcdefghij"
JWT_SECRET = "j" * 32
VALID = {
    "SECRET_KEY": SECRET_KEY,
    "JWT_SECRET": JWT_SECRET,
    "DATABASE_URL": "postgres://u:p%40ss@db1:5432/shop",
    "DJANGO_ENV": "development",
}


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    return caught.value.problems


def warnings(environ: dict[str, str]) -> list[str]:
    return [str(finding) for finding in load_config(environ).warnings]


def test_empty_environment_lists_every_required_variable() -> None:
    found = " ".join(problems({}))
    for name in ("SECRET_KEY", "JWT_SECRET", "DATABASE_URL", "ALLOWED_HOSTS"):
        assert name in found


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SECRET_KEY", "short-secret-value", "too weak"),
        ("SECRET_KEY", "a" * 60, "too weak"),
        ("JWT_SECRET", "tiny-jwt-secret", "at least 32 bytes"),
        ("JWT_SECRET_PREV", "tiny-previous-secret", "at least 32 bytes"),
        ("JWT_EXPIRES_IN", "abc", "not a duration"),
        ("JWT_REFRESH_EXPIRES_IN", "0", "not a duration"),
        ("DB_REPLICA_MAX_LAG", "5 minutes", "not a duration"),
        ("DB_CONNECT_TIMEOUT", "soon", "not a whole number"),
        ("WEB_CONCURRENCY", "0", "out of range"),
        ("PORT", "70000", "out of range"),
        ("DJANGO_ENV", "staging", "not one of"),
        ("DEBUG", "maybe", "not a boolean"),
        ("REDIS_URL", "http://cache", "not a"),
        ("PAYMENT_GATEWAY_URL", "gateway.local", "not a"),
        ("OTEL_EXPORTER_OTLP_ENDPOINTS", "collector:4318", "not a"),
        ("DATABASE_URL", "mysql://u:p@h/db", "not a PostgreSQL URL"),
        ("DATABASE_URL", "postgres://u:p@h:port/db", "not host or host:port"),
        ("DATABASE_REPLICA_URLS", "not a url", "not a PostgreSQL URL"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto", "not Header:value"),
    ],
)
def test_each_invalid_value_is_named(name: str, value: str, fragment: str) -> None:
    found = problems({**VALID, name: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"{name}:") and fragment in found[0]


def test_all_problems_are_reported_together_without_secret_values() -> None:
    environ = {
        **VALID,
        "SECRET_KEY": "short-secret-value",
        "JWT_SECRET": "tiny-jwt-secret",
        "JWT_EXPIRES_IN": "abc",
        "DB_CONNECT_TIMEOUT": "soon",
        "REDIS_URL": "http://user:hunter2@cache",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert len(caught.value.problems) == 5
    report = caught.value.report()
    for secret in ("short-secret-value", "tiny-jwt-secret", "hunter2"):
        assert secret not in report
    assert "'abc'" in report  # a non-secret bad value is quoted to help the operator


def test_invalid_django_env_adds_no_knock_on_problems() -> None:
    assert [p.split(":")[0] for p in problems({**VALID, "DJANGO_ENV": "staging"})] == ["DJANGO_ENV"]


def test_valid_environment_is_typed() -> None:
    config = load_config(
        {
            **VALID,
            "JWT_EXPIRES_IN": "15m",
            "JWT_REFRESH_EXPIRES_IN": "7d",
            "WEB_CONCURRENCY": "3",
            "DB_REPLICA_MAX_LAG": "10",
            "RATELIMIT_ENABLED": "false",
            "TRUSTED_PROXY_COUNT": "1",
        }
    )
    assert config.database["HOST"] == "db1" and config.database["PASSWORD"] == "p@ss"
    assert config.database["OPTIONS"]["connect_timeout"] == 2
    assert config.jwt_access_lifetime == timedelta(minutes=15)
    assert config.jwt_refresh_lifetime == timedelta(days=7)
    assert config.db_replica_max_lag == timedelta(seconds=10)
    assert (config.web_concurrency, config.ratelimit_enabled, config.trusted_proxy_count) == (3, False, 1)


def test_defaults_apply_when_optional_values_are_absent() -> None:
    config = load_config(VALID)
    assert config.jwt_access_lifetime == timedelta(minutes=15)
    assert config.jwt_refresh_lifetime == timedelta(days=7)
    assert (config.db_connect_timeout, config.port, config.web_concurrency) == (2, 8000, 2)
    assert config.allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]


def test_missing_recommended_values_are_named_spof_warnings() -> None:
    config = load_config(VALID)
    spof = {finding.name for finding in config.warnings if finding.spof}
    assert spof == {"DATABASE_REPLICA_URLS", "REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINTS"}
    complete = {
        **VALID,
        "DATABASE_REPLICA_URLS": "postgres://u:p@db2:5432/shop",
        "REDIS_URL": "redis://r:6379/0",
        "OTEL_EXPORTER_OTLP_ENDPOINTS": "http://c1:4318,http://c2:4318",
    }
    assert load_config(complete).warnings == []


def test_multi_host_url_and_libpq_options_pass_through() -> None:
    url = "postgres://u:p@h1:5432,h2:5433/shop?target_session_attrs=read-write&sslmode=require"
    config = load_config({**VALID, "DATABASE_URL": url})
    assert config.database["HOST"] == "h1,h2" and config.database["PORT"] == "5432,5433"
    assert config.database["OPTIONS"]["target_session_attrs"] == "read-write"
    assert config.database["OPTIONS"]["sslmode"] == "require"
    assert config.database_has_failover


def test_seed_style_discrete_database_variables() -> None:
    environ = {
        **VALID,
        "DB_HOST_PRIMARY": "pg",
        "DB_USERNAME": "shop",
        "DB_PASSWORD": "pw",
        "DB_NAME": "ecommerce",
        "DB_HOST_REPLICA": "pg-replica",
    }
    del environ["DATABASE_URL"]
    config = load_config(environ)
    assert (config.database["HOST"], config.database["NAME"], config.database["USER"]) == ("pg", "ecommerce", "shop")
    assert config.replicas[0]["HOST"] == "pg-replica" and config.replicas[0]["PASSWORD"] == "pw"


def test_db_host_without_name_or_user_names_both() -> None:
    environ = {**VALID, "DB_HOST": "pg"}
    del environ["DATABASE_URL"]
    assert {p.split(":")[0] for p in problems(environ)} == {"DB_NAME", "DB_USERNAME"}


def test_database_url_wins_over_discrete_variables_with_a_warning() -> None:
    config = load_config({**VALID, "DB_HOST": "other"})
    assert config.database["HOST"] == "db1"
    assert any("DATABASE_URL is set too" in str(w) for w in config.warnings)


@pytest.mark.parametrize("replica", ["DATABASE_REPLICA_URLS", "DB_HOST_REPLICA"])
def test_replica_equal_to_primary_is_refused(replica: str) -> None:
    value = VALID["DATABASE_URL"] if replica == "DATABASE_REPLICA_URLS" else "db1"
    assert any("primary itself" in p for p in problems({**VALID, replica: value}))


def test_secret_from_file(tmp_path) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text("f" * 40 + "\n")
    environ = {**VALID, "JWT_SECRET_FILE": str(secret_file)}
    del environ["JWT_SECRET"]
    assert load_config(environ).jwt_secret == "f" * 40


def test_unreadable_secret_file_is_a_problem(tmp_path) -> None:
    environ = {**VALID, "JWT_SECRET_FILE": str(tmp_path / "missing")}
    del environ["JWT_SECRET"]
    assert [p.split(":")[0] for p in problems(environ)] == ["JWT_SECRET_FILE"]


def test_dotenv_values_are_literal(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nJWT_SECRET=$abc$def\nexport NAME='quoted value'\n")
    assert read_dotenv(dotenv) == {"JWT_SECRET": "$abc$def", "NAME": "quoted value"}


def test_environment_reads_dotenv_and_the_real_environment_wins(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / "app.env"
    dotenv.write_text("PORT=9000\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    monkeypatch.setenv("PORT", "9100")
    merged = environment()
    assert merged["PORT"] == "9100" and merged["LOG_LEVEL"] == "DEBUG"
    assert dotenv_path({"DOTENV_FILE": "none"}) is None


def test_jaeger_endpoint_is_one_otlp_endpoint() -> None:
    config = load_config({**VALID, "JAEGER_ENDPOINT": "http://jaeger:4318"})
    assert config.otlp_endpoints == ["http://jaeger:4318"]


def test_jaeger_thrift_collector_is_refused_with_a_warning() -> None:
    config = load_config({**VALID, "JAEGER_ENDPOINT": "http://localhost:14268/api/traces"})
    assert config.otlp_endpoints == []
    assert any("Thrift" in str(w) for w in config.warnings)


def test_prometheus_port_is_explained() -> None:
    assert any("no separate metrics port" in w for w in warnings({**VALID, "PROMETHEUS_PORT": "9090"}))


def test_production_requires_allowed_hosts_and_refuses_debug() -> None:
    found = problems({**VALID, "DJANGO_ENV": "production", "DEBUG": "true"})
    assert {p.split(":")[0] for p in found} == {"ALLOWED_HOSTS", "DEBUG"}


def test_production_defaults() -> None:
    environ = {**VALID, "ALLOWED_HOSTS": "shop.example"}
    del environ["DJANGO_ENV"]
    config = load_config(environ)
    assert config.is_production and config.ssl_redirect and not config.debug
    assert config.allowed_hosts == ["shop.example"]


def test_proxy_ssl_header_is_parsed() -> None:
    config = load_config({**VALID, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"})
    assert config.proxy_ssl_header == ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://u:p@[::1/db"),
        ("REDIS_URL", "redis://[oops"),
        ("REDIS_URL", "redis://h:notaport/0"),
        ("PAYMENT_GATEWAY_URL", "http://h:99999"),
        ("JWT_EXPIRES_IN", "99999999999d"),
        ("PROMETHEUS_PORT", "abc"),
        ("SECRET_KEY", "django-insecure-" + "x1y2z3" * 10),
    ],
)
def test_unparsable_values_are_problems_not_tracebacks(name: str, value: str) -> None:
    found = problems({**VALID, name: value})
    assert [p.split(":")[0] for p in found] == [name]


def test_a_password_in_a_broken_url_is_never_quoted() -> None:
    found = problems({**VALID, "DATABASE_URL": "postgres://bulwark:s3cr3t/xyz@db:5432/bulwark"})
    assert found and "s3cr3t" not in " ".join(found)


def test_ipv6_and_unix_socket_urls() -> None:
    v6 = load_config({**VALID, "DATABASE_URL": "postgres://u:p@[::1]:5433/shop"}).database
    assert (v6["HOST"], v6["PORT"]) == ("::1", "5433")
    unix = load_config({**VALID, "DATABASE_URL": "postgres:///shop?host=/var/run/postgresql"}).database
    assert (unix["HOST"], unix["NAME"]) == ("/var/run/postgresql", "shop")


def test_seed_replica_host_takes_a_port_or_the_primarys() -> None:
    environ = {**VALID, "DB_HOST": "pg", "DB_PORT": "55432", "DB_USERNAME": "u", "DB_NAME": "shop"}
    del environ["DATABASE_URL"]
    assert load_config({**environ, "DB_HOST_REPLICA": "pg2"}).replicas[0]["PORT"] == "55432"
    assert load_config({**environ, "DB_HOST_REPLICA": "pg:55433"}).replicas[0]["PORT"] == "55433"


@pytest.mark.parametrize("content", ["", "   \n", b"\xff\xfe\x00bad"])
def test_empty_or_unreadable_secret_file_is_named(tmp_path, content) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    environ = {**VALID, "JWT_SECRET_FILE": str(secret_file)}
    del environ["JWT_SECRET"]
    assert [p.split(":")[0] for p in problems(environ)] == ["JWT_SECRET_FILE"]


def test_blank_file_variable_means_missing() -> None:
    environ = {**VALID, "SECRET_KEY_FILE": ""}
    del environ["SECRET_KEY"]
    assert [p.split(":")[0] for p in problems(environ)] == ["SECRET_KEY"]


def test_dotenv_file_that_does_not_exist_is_a_problem(tmp_path) -> None:
    assert [p.split(":")[0] for p in problems({**VALID, "DOTENV_FILE": str(tmp_path / "nope.env")})] == ["DOTENV_FILE"]


def test_env_example_secrets_are_blank_so_a_copy_does_not_start(tmp_path) -> None:
    from resilience.config.docs import env_example

    copy = tmp_path / ".env"
    copy.write_text(env_example())
    values = read_dotenv(copy)
    assert values["SECRET_KEY"] == "" and values["JWT_SECRET"] == ""
    assert {p.split(":")[0] for p in problems({**values, "ALLOWED_HOSTS": "x"})} >= {"SECRET_KEY", "JWT_SECRET"}
