"""The environment loader: every problem reported at once, fallbacks, typed values, no secret leaked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilience.config import ConfigError, load_config, read_dotenv

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


def test_empty_environment_lists_every_required_variable() -> None:
    found = " ".join(problems({}))
    for name in ("SECRET_KEY", "JWT_SECRET", "DATABASE_URL", "ALLOWED_HOSTS"):
        assert name in found


def test_invalid_values_are_all_reported_without_their_values() -> None:
    environ = {
        **VALID,
        "SECRET_KEY": "short-secret-value",
        "JWT_SECRET": "tiny-jwt-secret",
        "JWT_EXPIRES_IN": "abc",
        "DB_CONNECT_TIMEOUT": "soon",
        "DJANGO_ENV": "staging",
        "REDIS_URL": "http://cache",
    }
    found = problems(environ)
    assert len(found) == 6
    report = ConfigError(found).report()
    assert "short-secret-value" not in report and "tiny-jwt-secret" not in report
    assert "JWT_EXPIRES_IN" in report and "'abc'" in report


def test_valid_environment_is_typed() -> None:
    config = load_config({**VALID, "JWT_EXPIRES_IN": "15m", "JWT_REFRESH_EXPIRES_IN": "7d", "WEB_CONCURRENCY": "3"})
    assert config.database["HOST"] == "db1" and config.database["PASSWORD"] == "p@ss"
    assert config.database["OPTIONS"]["connect_timeout"] == 2
    assert config.jwt_access_lifetime == timedelta(minutes=15)
    assert config.jwt_refresh_lifetime == timedelta(days=7)
    assert config.web_concurrency == 3
    assert any("DATABASE_REPLICA_URLS" in warning for warning in config.warnings)


def test_multi_host_url_and_libpq_options_pass_through() -> None:
    url = "postgres://u:p@h1:5432,h2:5433/shop?target_session_attrs=read-write&sslmode=require"
    config = load_config({**VALID, "DATABASE_URL": url})
    assert config.database["HOST"] == "h1,h2" and config.database["PORT"] == "5432,5433"
    assert config.database["OPTIONS"]["target_session_attrs"] == "read-write"
    assert config.database["OPTIONS"]["sslmode"] == "require"


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


def test_database_url_wins_over_discrete_variables_with_a_warning() -> None:
    config = load_config({**VALID, "DB_HOST": "other"})
    assert config.database["HOST"] == "db1"
    assert any("DATABASE_URL wins" in warning for warning in config.warnings)


def test_replica_equal_to_primary_is_refused() -> None:
    assert any("primary itself" in p for p in problems({**VALID, "DATABASE_REPLICA_URLS": VALID["DATABASE_URL"]}))


def test_secret_from_file(tmp_path) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text("f" * 40 + "\n")
    environ = {**VALID, "JWT_SECRET_FILE": str(secret_file)}
    del environ["JWT_SECRET"]
    assert load_config(environ).jwt_secret == "f" * 40


def test_unreadable_secret_file_is_a_problem(tmp_path) -> None:
    assert any("JWT_SECRET_FILE" in p for p in problems({**VALID, "JWT_SECRET_FILE": str(tmp_path / "missing")}))


def test_dotenv_values_are_literal(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nJWT_SECRET=$abc$def\nexport NAME='quoted value'\n")
    assert read_dotenv(dotenv) == {"JWT_SECRET": "$abc$def", "NAME": "quoted value"}


def test_production_requires_allowed_hosts_and_ignores_debug() -> None:
    assert any("ALLOWED_HOSTS" in p for p in problems({**VALID, "DJANGO_ENV": "production"}))
    config = load_config({**VALID, "DJANGO_ENV": "production", "ALLOWED_HOSTS": "shop.example", "DEBUG": "true"})
    assert config.debug is False
