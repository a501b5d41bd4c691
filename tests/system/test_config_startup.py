"""Start-up with broken and seed-style environments, as real processes: manage.py, gunicorn, ASGI, validate_env."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import HEALTH_AREAS
from tests.system.conftest import ROOT, Gunicorn, free_port

pytestmark = pytest.mark.system

STRONG_SECRET_KEY = "Sk-" + "a1b2c3d4e5" * 6
JWT_SECRET = "J" * 20 + "wt-secret-0123456789"
SECRETS_IN_BROKEN_ENV = ("too-short-secret", "hunter2hunter2", "tiny-jwt")
BROKEN_ENV = {
    "SECRET_KEY": "too-short-secret",
    "JWT_SECRET": "tiny-jwt",
    "DATABASE_URL": "postgres://shop:hunter2hunter2@127.0.0.1:1/shop",
    "JWT_EXPIRES_IN": "abc",
    "DB_CONNECT_TIMEOUT": "soon",
    "DATABASE_REPLICA_URLS": "postgres://shop:hunter2hunter2@127.0.0.1:1/shop",
}
BROKEN_NAMES = (
    "SECRET_KEY",
    "JWT_SECRET",
    "JWT_EXPIRES_IN",
    "DB_CONNECT_TIMEOUT",
    "DATABASE_REPLICA_URLS",
    "ALLOWED_HOSTS",
)


def clean_env(**values: str) -> dict[str, str]:
    """Only what a process needs to run, plus ``values``: no .env, no inherited Bulwark variables."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DOTENV_FILE": "none", **values}


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def assert_clean_report(output: str) -> None:
    assert "Bulwark cannot start" in output
    for name in BROKEN_NAMES:
        assert f"{name}:" in output, name
    for secret in SECRETS_IN_BROKEN_ENV:
        assert secret not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", [["check"], ["migrate", "--plan"], ["seed_demo"]])
def test_manage_py_refuses_broken_environment_with_every_problem(command: list[str]) -> None:
    result = run([sys.executable, "manage.py", *command], clean_env(**BROKEN_ENV))
    assert result.returncode == 2
    assert_clean_report(result.stderr)
    assert result.stdout == ""


def test_manage_py_refuses_empty_environment() -> None:
    result = run([sys.executable, "manage.py", "check"], clean_env())
    assert result.returncode == 2
    for name in ("SECRET_KEY", "JWT_SECRET", "DATABASE_URL", "ALLOWED_HOSTS"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_master_stops_instead_of_respawning_workers() -> None:
    env = clean_env(**BROKEN_ENV, WEB_CONCURRENCY="2")
    args = [sys.executable, "-m", "gunicorn", "settings.wsgi", "--bind", f"127.0.0.1:{free_port()}"]
    result = run(args, env, timeout=60)  # a respawn loop would hit this timeout
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "App failed to load" in output
    assert output.count("Booting worker") <= 2
    assert_clean_report(output)


def test_asgi_entry_point_refuses_broken_environment() -> None:
    result = run([sys.executable, "-c", "import settings.asgi"], clean_env(**BROKEN_ENV))
    assert result.returncode == 4
    assert_clean_report(result.stderr)


def _validate_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "manage.py", "validate_env", *args], env)


def _valid_env(**extra: str) -> dict[str, str]:
    defaults = {
        "SECRET_KEY": STRONG_SECRET_KEY,
        "JWT_SECRET": JWT_SECRET,
        "DJANGO_ENV": "development",
        "DATABASE_URL": "postgres://shop:hunter2hunter2@db1.invalid:5432/shop",
    }
    return clean_env(**{**defaults, **extra})


def test_validate_env_with_nothing_set_reports_every_area_and_exits_2() -> None:
    result = _validate_env(clean_env())
    assert result.returncode == 2
    for title in (
        "Database",
        "Authentication",
        "Configuration",
        "Logging",
        "Telemetry",
        "Serving",
        "Cache and rate limiting",
        "External services",
    ):
        assert title in result.stdout
    assert "❌ DATABASE_URL" in result.stdout and "❌ JWT_SECRET" in result.stdout
    assert "Invalid configuration" in result.stdout.splitlines()[-1]
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_env_broken_values_exit_2_without_secrets() -> None:
    result = _validate_env(clean_env(**BROKEN_ENV))
    assert result.returncode == 2
    for secret in SECRETS_IN_BROKEN_ENV:
        assert secret not in result.stdout + result.stderr


def test_validate_env_valid_without_replica_exits_1() -> None:
    result = _validate_env(_valid_env())
    assert result.returncode == 1, result.stdout
    assert "critical area(s) without redundancy: database" in result.stdout
    assert "hunter2hunter2" not in result.stdout


def test_validate_env_valid_with_redundancy_exits_0_and_json_has_the_health_areas() -> None:
    env = _valid_env(
        DATABASE_REPLICA_URLS="postgres://shop:hunter2hunter2@db2.invalid:5432/shop",
        REDIS_URL="redis://cache.invalid:6379/0",
        OTEL_EXPORTER_OTLP_ENDPOINTS="http://c1.invalid:4318,http://c2.invalid:4318",
    )
    text = _validate_env(env)
    assert text.returncode == 0, text.stdout
    assert text.stdout.splitlines()[-1].startswith("✅ Valid; no critical single point of failure")
    result = _validate_env(env, "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert list(report["areas"]) == HEALTH_AREAS
    assert report["valid"] is True and report["critical"] == []
    assert report["score"] == {"at_risk": 0, "total": 8}
    assert "hunter2hunter2" not in result.stdout


def test_check_deploy_passes_with_the_documented_production_environment() -> None:
    env = clean_env(
        SECRET_KEY=STRONG_SECRET_KEY,
        JWT_SECRET=JWT_SECRET,
        ALLOWED_HOSTS="shop.example.com",
        DATABASE_URL="postgres://shop:pw@db1.invalid:5432/shop",
    )
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_seed_style_variables_start_a_working_production_server(stack_env, tmp_path) -> None:
    primary = urlsplit(stack_env["DATABASE_URL"])
    replica = urlsplit(stack_env["DATABASE_REPLICA_URLS"].split(",")[0])
    env = clean_env(
        SECRET_KEY=STRONG_SECRET_KEY,
        JWT_SECRET=JWT_SECRET,
        JWT_EXPIRES_IN="24h",
        DB_HOST=primary.hostname,
        DB_PORT=str(primary.port),
        DB_USERNAME=primary.username,
        DB_PASSWORD=primary.password,
        DB_NAME=primary.path.lstrip("/"),
        DB_HOST_REPLICA=f"{replica.hostname}:{replica.port}",  # the local replica listens on its own port
        REDIS_URL=stack_env["REDIS_URL"],
        JAEGER_ENDPOINT="http://localhost:14268/api/traces",
        PROMETHEUS_PORT="9090",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto:https",
    )
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        assert requests.get(f"{server.url}/health/live", timeout=10).status_code == 200  # exempt from HTTPS redirect
        plain = requests.get(f"{server.url}/api/products/", allow_redirects=False, timeout=10)
        assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
        behind_proxy = requests.get(f"{server.url}/api/products/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
        assert behind_proxy.status_code == 200 and behind_proxy.json()["count"] >= 50
        assert "max-age=31536000" in behind_proxy.headers["Strict-Transport-Security"]
        log = server.log_path.read_text(errors="replace")  # all of it: JSON lines overflow log_text()'s tail
        assert "Thrift" in log and "PROMETHEUS_PORT" in log  # the seed's variables are explained at start-up
        assert "hunter2" not in log and primary.password not in log
    finally:
        server.stop()


def test_validate_env_opens_no_connection() -> None:
    """Every dependency URL points at a listening socket of ours: nothing may connect to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        env = _valid_env(
            DATABASE_URL=f"postgres://shop:pw@127.0.0.1:{port}/shop",
            DATABASE_REPLICA_URLS=f"postgres://shop:pw@127.0.0.1:{port}/replica",
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            OTEL_EXPORTER_OTLP_ENDPOINTS=f"http://127.0.0.1:{port},http://127.0.0.1:{port}/b",
            PAYMENT_GATEWAY_URL=f"http://127.0.0.1:{port}",
        )
        result = _validate_env(env)
        assert result.returncode == 0, result.stdout
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no client ever connected
