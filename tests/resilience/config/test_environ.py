"""The reading layer on django-environ 0.14: what django-environ does on its own (measured, so an upgrade that
changes it fails here first), and what Bulwark keeps on top of it — literal ``$`` values, ``NAME_FILE`` without
its newline and a missing file as a finding, every lenient cast refused, libpq multi-host URLs as libpq reads them
(through to a real psycopg connection attempt), the ``.env`` precedence, and no secret in any message."""

from __future__ import annotations

import io
import logging
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import quote

import environ
import psycopg
import pytest

from resilience.config import ConfigError, environment, load_config, read_dotenv
from resilience.config.env import BulwarkEnv, UrlProblem
from resilience.config.validate import main as validate_env

ROOT = Path(__file__).resolve().parents[3]
SECRET_KEY = "k" * 40 + "abcdefghij"
VALID = {
    "SECRET_KEY": SECRET_KEY,
    "JWT_SECRET": "j" * 32,
    "DATABASE_URL": "postgres://u:pw@db1:5432/shop",
    "DJANGO_ENV": "development",
}
DOLLAR_SECRET = "$abc$def" + "x" * 40  # as a generator may write it: starts with $, holds another $


def problems(environ_: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(environ_)
    return caught.value.problems


def names(found: list[str]) -> list[str]:
    return [problem.split(":")[0] for problem in found]


class PlainEnv(environ.Env):
    """django-environ as it comes, over a private mapping (the facts below never touch os.environ)."""

    def __init__(self, mapping: dict[str, str], *, file_aware: bool = False) -> None:
        super().__init__()
        self.ENVIRON = environ.FileAwareMapping(env=mapping) if file_aware else mapping


def dotenv_sink() -> type[environ.Env]:
    return type("Sink", (environ.Env,), {"ENVIRON": {}})


# --- What django-environ 0.14.0 does on its own: the facts this layer is designed around --------------------------


def test_the_pinned_django_environ_is_installed() -> None:
    assert environ.__version__ == "0.14.0"
    assert "django-environ==0.14.0" in (ROOT / "requirements.txt").read_text().splitlines()


def test_fact_a_value_starting_with_dollar_is_a_lookup_that_quotes_it_or_falls_back_silently() -> None:
    env = PlainEnv({"JWT_SECRET": "$abc$def"})
    with pytest.raises(environ.ImproperlyConfigured, match=r"abc\$def"):
        env("JWT_SECRET")
    assert env("JWT_SECRET", default="fallback") == "fallback"
    no_switch = environ.Env(interpolate=False)  # taken as a scheme entry for a variable named "interpolate"
    no_switch.ENVIRON = {"JWT_SECRET": "$abc$def"}
    assert no_switch.scheme == {"interpolate": False}
    with pytest.raises(environ.ImproperlyConfigured):
        no_switch("JWT_SECRET")


def test_fact_file_aware_env_keeps_the_newline_interpolates_and_raises_for_a_missing_file(tmp_path) -> None:
    (tmp_path / "s").write_text("secret\n")
    (tmp_path / "d").write_text("$abc$def\n")
    env = PlainEnv(
        {"S_FILE": str(tmp_path / "s"), "S": "direct", "D_FILE": str(tmp_path / "d"), "M_FILE": str(tmp_path / "m")},
        file_aware=True,
    )
    assert env("S") == "secret\n"  # the file wins over S, newline and all
    with pytest.raises(environ.ImproperlyConfigured):
        env("D")
    with pytest.raises(FileNotFoundError):
        env("M", default="x")


def test_fact_the_casts_are_lenient() -> None:
    env = PlainEnv({"B": "maybe", "F": "x1", "U": "not a url", "D": "mysql://u:p@h/db", "N": "//u:hunter2@db/shop"})
    assert env.bool("B") is False
    assert env.float("F") == 1.0
    assert env.url("U").path == "not a url"
    assert env.db_url("D")["ENGINE"] == "django.db.backends.mysql"
    with pytest.warns(UserWarning, match="hunter2"):  # the warning prints the password
        assert env.db_url("N") == {}


def test_fact_db_url_config_multi_host_quirks() -> None:
    config = environ.Env.db_url_config
    good = config("postgres://u:p@h1:5432,h2:5433/shop?target_session_attrs=read-write")
    assert (good["HOST"], good["PORT"]) == ("h1,h2", "5432,5433")
    assert good["OPTIONS"] == {"target_session_attrs": "read-write"}
    shifted = config("postgres://u:p@h1,h2:5433/shop")
    assert (shifted["HOST"], shifted["PORT"]) == ("h1,h2", 5433)  # one port for two hosts: libpq uses it for both
    assert config("postgres://u:p@[::1]:5432,[::1]:5433/shop")["HOST"] == "[::1],[::1]"
    assert config("postgres://u:p@%2Ftmp%2Fpg/shop")["HOST"] == "%2Ftmp%2Fpg"


def test_fact_read_env_precedence_and_parsing(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('PORT=9000\nDQ="a\\$b"\n')
    sink = dotenv_sink()
    sink.ENVIRON = {"PORT": "9100"}
    sink.read_env(str(dotenv), PORT="9200")
    assert sink.ENVIRON == {"PORT": "9100", "DQ": "a$b"}  # the environment wins, keywords too; "…" unescaped
    sink.read_env(str(dotenv), overwrite=True)
    assert sink.ENVIRON["PORT"] == "9000"
    sink.read_env(str(tmp_path / "missing.env"))  # silent


# --- Values are literal: $ secrets given directly, in files, in .env -----------------------------------------------


def test_a_dollar_secret_given_directly_is_taken_literally() -> None:
    environ_ = {**VALID, "JWT_SECRET": DOLLAR_SECRET, "SECRET_KEY": "$SECRET_KEY" + SECRET_KEY, "abc$def": "nope"}
    config = load_config(environ_)
    assert config.jwt_secret == DOLLAR_SECRET
    assert config.secret_key == "$SECRET_KEY" + SECRET_KEY  # not the variable SECRET_KEY it seems to name


def test_a_dollar_secret_in_a_file_is_taken_literally_without_its_newline(tmp_path) -> None:
    (tmp_path / "jwt").write_text(DOLLAR_SECRET + "\n")
    (tmp_path / "pw").write_text("$pw\r\n")
    environ_ = {**VALID, "JWT_SECRET_FILE": str(tmp_path / "jwt")}
    del environ_["DATABASE_URL"]
    environ_.update(DB_HOST="pg", DB_USERNAME="u", DB_NAME="shop", DB_PASSWORD_FILE=str(tmp_path / "pw"))
    config = load_config(environ_)
    assert config.jwt_secret == DOLLAR_SECRET
    assert config.database["PASSWORD"] == "$pw"


def test_bulwark_env_strips_only_the_files_final_newline(tmp_path) -> None:
    (tmp_path / "s").write_text("line one\nline two\n\n")
    env = BulwarkEnv({"S_FILE": f"  {tmp_path / 's'}  ", "S": "direct"})
    assert env.str("S") == "line one\nline two\n"  # the file wins over S; one final newline is not the value
    assert BulwarkEnv({"S_FILE": "", "S": "direct"}).str("S") == "direct"  # a blank NAME_FILE is not given


def test_a_file_wins_over_the_direct_value(tmp_path) -> None:
    (tmp_path / "jwt").write_text("f" * 40)
    assert load_config({**VALID, "JWT_SECRET_FILE": str(tmp_path / "jwt")}).jwt_secret == "f" * 40


@pytest.mark.parametrize("name", ["JWT_SECRET", "DB_CONNECT_TIMEOUT", "REDIS_URL"])
def test_a_missing_file_is_a_finding_even_where_a_default_or_value_exists(tmp_path, name) -> None:
    missing = tmp_path / "missing"
    found = problems({**VALID, f"{name}_FILE": str(missing)})
    assert names(found) == [f"{name}_FILE"]
    assert str(missing) in found[0] and "No such file" in found[0]


def test_a_directory_as_file_is_a_finding(tmp_path) -> None:
    found = problems({**VALID, "JWT_SECRET_FILE": str(tmp_path)})
    assert names(found) == ["JWT_SECRET_FILE"] and "cannot read" in found[0]


def test_a_dollar_secret_in_dotenv_is_literal_and_never_reaches_os_environ(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"JWT_SECRET={DOLLAR_SECRET}\nexport QUOTED='{DOLLAR_SECRET}'\nONLY_IN_DOTENV=1\n")
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("ONLY_IN_DOTENV", raising=False)
    merged = environment()
    assert merged["JWT_SECRET"] == DOLLAR_SECRET and merged["QUOTED"] == DOLLAR_SECRET
    assert read_dotenv(dotenv)["JWT_SECRET"] == DOLLAR_SECRET
    load_config()
    assert "ONLY_IN_DOTENV" not in os.environ and "JWT_SECRET" not in os.environ


# --- Every lenient cast refused, naming the variable and not the value ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("DEBUG", "maybe", "not a boolean"),  # Env.bool: False
        ("RATELIMIT_ENABLED", "enabled", "not a boolean"),
        ("DB_CONNECT_TIMEOUT", "x1", "not a whole number"),  # Env.float: 1.0
        ("PORT", "80x", "not a whole number"),
        ("PAYMENT_GATEWAY_TIMEOUT", "x1", "not a duration"),
        ("REDIS_URL", "not a url", "not a valid"),  # Env.url: a URL whose path is "not a url"
        ("PAYMENT_GATEWAY_URL", "not a url", "not a valid"),
        ("PAYMENT_GATEWAY_URL", "https://pay ments.example", "not a valid"),
        ("DATABASE_URL", "mysql://u:p@h/db", "not a PostgreSQL URL"),  # Env.db_url: a MySQL entry
        ("DATABASE_URL", "postgis://u:p@h/db", "not a PostgreSQL URL"),
        ("DATABASE_URL", "//u:p@db/shop", "not a PostgreSQL URL"),  # Env.db_url: {} and a warning with the password
        ("DATABASE_URL", "u:p@db:5432/shop", "not a PostgreSQL URL"),  # Env.db_url: ENGINE 'u'
        ("DATABASE_URL", "postgres://u:p@h:5432/", "not a PostgreSQL URL"),  # Env.db_url: NAME ''
    ],
)
def test_each_lenient_cast_is_refused(name: str, value: str, fragment: str, recwarn) -> None:
    found = problems({**VALID, name: value})
    assert len(found) == 1 and found[0].startswith(f"{name}:") and fragment in found[0], found
    if name.endswith("_URL"):
        assert value not in found[0]  # a URL may carry a password: never quoted
    assert not recwarn.list


def test_a_refused_url_raises_no_warning_and_quotes_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UrlProblem) as caught:
            BulwarkEnv.db_url_config("//u:hunter2@db/shop")
    assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None


def test_django_settings_in_a_url_query_are_refused_not_silently_overridden() -> None:
    found = problems({**VALID, "DATABASE_URL": "postgres://u:p@h/shop?conn_max_age=600&atomic_requests=true"})
    assert names(found) == ["DATABASE_URL"] and "conn_max_age, atomic_requests" in found[0]


def test_libpq_options_and_the_connect_timeout_pass_through() -> None:
    url = "postgres://u:p%2Bq@h/my+db?sslmode=require&connect_timeout=7&application_name=shop"
    entry = load_config({**VALID, "DATABASE_URL": url}).database
    assert (entry["NAME"], entry["PASSWORD"]) == ("my+db", "p+q")  # libpq decodes %-escapes only, never '+'
    assert entry["OPTIONS"] == {"sslmode": "require", "connect_timeout": 7, "application_name": "shop"}


# --- libpq multi-host URLs: the three cases django-environ gets wrong -----------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "host", "port"),
    [
        ("h1,h2:5433", "h1,h2", "5432,5433"),  # a host without a port gets libpq's 5432, not its neighbour's
        ("h1:5433,h2", "h1,h2", "5433,5432"),
        ("[::1]:5432,[::1]:5433", "::1,::1", "5432,5433"),
        ("[2001:db8::1],h2:5433", "2001:db8::1,h2", "5432,5433"),
        ("%2Fvar%2Frun%2Fpostgresql", "/var/run/postgresql", "5432"),
        ("%2Ftmp%2Fa:5433,%2Ftmp%2Fb", "/tmp/a,/tmp/b", "5433,5432"),
    ],
)
def test_multi_host_urls_as_libpq_reads_them(hosts: str, host: str, port: str) -> None:
    entry = load_config({**VALID, "DATABASE_URL": f"postgres://u:p@{hosts}/shop"}).database
    assert (entry["HOST"], entry["PORT"]) == (host, port)


def test_a_replica_url_may_list_several_hosts() -> None:
    urls = "postgres://u:p@r1:5432,r2/shop?target_session_attrs=standby, postgres://u:p@r3:5433/shop"
    replicas = load_config({**VALID, "DATABASE_REPLICA_URLS": urls}).replicas
    assert [(r["HOST"], r["PORT"]) for r in replicas] == [("r1,r2", "5432,5432"), ("r3", "5433")]
    assert replicas[0]["OPTIONS"]["target_session_attrs"] == "standby"


def _free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


def _connection_error(url: str) -> str:
    """psycopg's error for the entry Bulwark makes of ``url``, connected the way Django's backend connects."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    entry = load_config({**VALID, "DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "1"}).database
    settings_dict = {
        **entry,
        "TIME_ZONE": None,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
    }
    params = DatabaseWrapper(settings_dict, "probe").get_connection_params()
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(**params)
    return str(caught.value)


def test_psycopg_tries_a_port_less_host_on_5432_and_the_other_on_its_own_port() -> None:
    port = _free_port()
    if not _refused("127.0.0.2", 5432):
        pytest.skip("something listens on 127.0.0.2:5432")
    error = _connection_error(f"postgres://u:pw@127.0.0.2,127.0.0.1:{port}/shop")
    assert "host: '127.0.0.2', port: '5432'" in error
    assert f"host: '127.0.0.1', port: '{port}'" in error
    assert f"host: '127.0.0.2', port: '{port}'" not in error  # django-environ's shifted port


def test_psycopg_tries_each_ipv6_host_unbracketed() -> None:
    try:
        first, second = _free_port(socket.AF_INET6, "::1"), _free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    error = _connection_error(f"postgres://u:pw@[::1]:{first},[::1]:{second}/shop")
    assert f"host: '::1', port: '{first}'" in error and f"host: '::1', port: '{second}'" in error
    assert "could not translate host name" not in error


def test_psycopg_tries_each_socket_directory_decoded(tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    error = _connection_error(f"postgres://u:pw@{quote(str(first), safe='')}:6001,{quote(str(second), safe='')}/shop")
    assert f'socket "{first}/.s.PGSQL.6001"' in error and f'socket "{second}/.s.PGSQL.5432"' in error
    single = _connection_error(f"postgres://u:pw@{quote(str(first), safe='')}/shop")
    assert f'socket "{first}/.s.PGSQL.5432"' in single


# --- .env precedence and its lines --------------------------------------------------------------------------------


def test_the_real_environment_wins_over_dotenv_and_none_reads_none(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / "app.env"
    dotenv.write_text("PORT=9000\nLOG_LEVEL=DEBUG\nWEB_CONCURRENCY=5\n")
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("WEB_CONCURRENCY", "")  # set, even if empty: the environment wins
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    config = load_config()
    assert (config.port, config.log_level, config.web_concurrency) == (9100, "DEBUG", 2)
    monkeypatch.setenv("DOTENV_FILE", "none")
    assert load_config().port == 9100 and load_config().log_level == "INFO"


def test_a_dotenv_line_that_is_not_name_value_is_a_problem_named_by_its_number(tmp_path, monkeypatch, caplog) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n\n  LOG_LEVEL=DEBUG  \nJWT_SECRET = hunter2hunter2hunter2hunter2hunter2\nnot a line\n"
    )
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert caught.value.problems == [
        f"DOTENV_FILE: lines 4, 5 of {dotenv} not read: write NAME=value, without spaces around = "
        "(quote a value with spaces), or comment the line out with #."
    ]
    assert read_dotenv(dotenv) == {"LOG_LEVEL": "DEBUG"}  # indentation is not syntax
    assert "hunter2" not in caplog.text and "not a line" not in caplog.text


def test_a_dotenv_file_that_cannot_be_read_is_a_problem(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"PORT=9000\n\xff\xfe\n")
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert caught.value.problems == [f"DOTENV_FILE: cannot read {dotenv} (not UTF-8 text); nothing in it was used."]


def test_a_dotenv_with_a_byte_order_mark_reads_its_first_line(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes("\ufeffPORT=9000\n".encode())
    assert read_dotenv(dotenv) == {"PORT": "9000"}


# --- No secret in any message ---------------------------------------------------------------------------------------


def test_no_secret_value_in_any_message_log_or_warning(tmp_path, monkeypatch, caplog, recwarn) -> None:
    """Every secret broken in a way that django-environ would quote, print or warn about; then grep everything."""
    secrets = {
        "SECRET_KEY": "$S3CRETKEY-short",  # a lookup of "S3CRETKEY-short" in django-environ
        "JWT_SECRET_PREV": "$PR3VSECRET",
        "DATABASE_URL": "//bulwark:DBPASS-9f3a@db/shop",  # django-environ warns with the password
        "DATABASE_REPLICA_URLS": "mysql://bulwark:REPLPASS-77@h/db",
        "REDIS_URL": "redis://:REDISPASS-42@cache:notaport/0",
        "SECRET_KEY_FALLBACKS": "$FALLBACK-55",
        "PAYMENT_GATEWAY_URL": "gateway:GWTOKEN-31@pay",  # not a secret variable, but a URL
        "OTEL_EXPORTER_OTLP_ENDPOINTS": "collector:OTELTOKEN-13@c",
    }
    (tmp_path / "pw").write_text("$DBFILEPASS-8\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text("JWT_SECRET = JWTDOTENV-secret-value-long-enough\nJWT_SECRET_FILE=\n")
    for name in ("JWT_SECRET", "DB_HOST", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DB_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("DOTENV_FILE", str(dotenv))
    monkeypatch.setenv("DJANGO_ENV", "production")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ConfigError) as caught:
        load_config()
    out = io.StringIO()
    assert validate_env([], out=out) == 2
    assert validate_env(["--json"], out=out) == 2
    text = "\n".join(
        [
            caught.value.report(),
            *map(str, caught.value.findings),
            out.getvalue(),
            caplog.text,
            *(str(w.message) for w in recwarn.list),
        ]
    )
    assert {"SECRET_KEY", "JWT_SECRET", "DATABASE_URL", "REDIS_URL", "DOTENV_FILE"} <= {
        p.split(":")[0] for p in caught.value.problems
    }
    leaked = [
        marker
        for marker in (
            "S3CRETKEY",
            "PR3VSECRET",
            "DBPASS-9f3a",
            "REPLPASS-77",
            "REDISPASS-42",
            "FALLBACK-55",
            "GWTOKEN-31",
            "OTELTOKEN-13",
            "DBFILEPASS-8",
            "JWTDOTENV",
        )
        if marker in text
    ]
    assert leaked == []
