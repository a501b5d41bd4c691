"""The environment read through django-environ, as real processes: a ``.env`` with ``$`` secrets, ``NAME_FILE``
secrets and a multi-host URL configures manage.py and validate_env; a broken one stops them with every problem,
naming ``.env`` lines by number, never printing a secret."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.conftest import ROOT

pytestmark = pytest.mark.system

SECRET_KEY = "$Sk$" + "a1b2c3d4e5" * 6  # generated secrets may hold $, even first
JWT_SECRET = "$Jw$" + "Zx9Yw8Vu7T" * 4
JWT_SECRET_PREV = "$Pv$" + "Qq1Rr2Ss3T" * 4
DB_PASSWORD = "$Db$pass"
MARKERS = ("a1b2c3d4e5", "Zx9Yw8Vu7T", "Qq1Rr2Ss3T", "$Db$pass", "hunter2hunter2")


def clean_env(dotenv: Path, **values: str) -> dict[str, str]:
    """Only what a process needs, the given .env, and ``values``: no inherited Bulwark variables."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DOTENV_FILE": str(dotenv), **values}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assert_no_secret(output: str) -> None:
    for marker in MARKERS:
        assert marker not in output, marker
    assert "Traceback" not in output


@pytest.fixture
def configured(tmp_path) -> dict[str, str]:
    """A working configuration split between a .env file, a secret file and the real environment."""
    prev = tmp_path / "jwt_prev"
    prev.write_text(JWT_SECRET_PREV + "\n")
    dotenv = tmp_path / "app.env"
    dotenv.write_text(
        "# written by hand\n"
        f"SECRET_KEY={SECRET_KEY}\n"
        f"export JWT_SECRET='{JWT_SECRET}'\n"
        f"JWT_SECRET_PREV_FILE={prev}\n"
        f"DATABASE_URL=postgres://shop:{DB_PASSWORD}@h1.invalid,[::1]:5433,%2Fvar%2Frun%2Fpostgresql/shop\n"
        "  DJANGO_ENV=development\n"
        "PORT=9000\n"
    )
    return clean_env(dotenv, PORT="9100")  # the real environment wins over the file


def test_validate_env_reads_dotenv_dollar_secrets_files_and_multi_host_urls(configured) -> None:
    result = run([sys.executable, "manage.py", "validate_env", "--json"], configured)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    database = [line["message"] for line in report["areas"]["database"]["lines"]]
    assert "primary h1.invalid:5432,::1:5433,/var/run/postgresql:5432/shop, connect timeout 2s" in database
    serving = [line["message"] for line in report["areas"]["serving"]["lines"]]
    assert any("port 9100" in message for message in serving)
    assert_no_secret(result.stdout + result.stderr)


def test_settings_get_the_literal_values_and_os_environ_is_not_written(configured) -> None:
    probe = (
        "import hashlib, json, os\n"
        "from resilience.config import load_config\n"
        "c = load_config()\n"
        "digest = lambda s: hashlib.sha256(s.encode()).hexdigest()\n"
        "written = sorted(k for k in ('SECRET_KEY', 'JWT_SECRET', 'DATABASE_URL') if k in os.environ)\n"
        "print(json.dumps({'written': written,"
        " 'secret_key': digest(c.secret_key), 'jwt': digest(c.jwt_secret), 'prev': digest(c.jwt_secret_prev),"
        " 'password': digest(c.database['PASSWORD']), 'host': c.database['HOST'], 'port': c.database['PORT']}))\n"
    )
    result = run([sys.executable, "-c", probe], configured)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["written"] == []
    assert seen["secret_key"] == sha256(SECRET_KEY)
    assert seen["jwt"] == sha256(JWT_SECRET)
    assert seen["prev"] == sha256(JWT_SECRET_PREV)  # the file's newline is not the secret
    assert seen["password"] == sha256(DB_PASSWORD)
    assert (seen["host"], seen["port"]) == ("h1.invalid,::1,/var/run/postgresql", "5432,5433,5432")

    check = run([sys.executable, "manage.py", "check"], configured)
    assert check.returncode == 0, check.stdout + check.stderr
    assert_no_secret(check.stdout + check.stderr)


def test_a_broken_dotenv_stops_every_command_naming_lines_and_files_without_secrets(tmp_path) -> None:
    dotenv = tmp_path / "app.env"
    dotenv.write_text(
        f"SECRET_KEY={SECRET_KEY}\n"
        "JWT_SECRET = hunter2hunter2hunter2hunter2hunter2\n"  # not NAME=value: django-environ would log the line
        f"JWT_SECRET_PREV_FILE={tmp_path / 'missing'}\n"
        "DATABASE_URL=//shop:hunter2hunter2@db/shop\n"  # no scheme: django-environ would warn with the password
        "DEBUG=maybe\n"
        "DJANGO_ENV=development\n"
    )
    env = clean_env(dotenv)
    for command in (["check"], ["migrate", "--plan"]):
        result = run([sys.executable, "manage.py", *command], env)
        assert result.returncode == 2, result.stdout + result.stderr
        for fragment in (
            f"DOTENV_FILE: line 2 of {dotenv} not read",
            "JWT_SECRET: missing",
            f"JWT_SECRET_PREV_FILE: cannot read {tmp_path / 'missing'}",
            "DATABASE_URL: not a PostgreSQL URL",
            "DEBUG:",
        ):
            assert fragment in result.stderr, fragment
        assert_no_secret(result.stdout + result.stderr)
    validate = run([sys.executable, "manage.py", "validate_env"], env)
    assert validate.returncode == 2
    assert "line 2 of" in validate.stdout
    assert_no_secret(validate.stdout + validate.stderr)
