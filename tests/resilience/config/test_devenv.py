"""The development ``.env`` writer (``make run``): generated secrets when absent, later variables appended,
the operator's values never overwritten, the file private to its owner."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from resilience.config import load_config, read_dotenv
from resilience.config.devenv import dotenv_complete, main

ROOT = Path(__file__).resolve().parents[3]
DATABASE_URL = "postgres://u:p@db:5432/shop"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_generated_secrets_the_development_defaults_and_the_given_values(tmp_path, capsys) -> None:
    path = tmp_path / ".env"
    assert main([str(path), f"DATABASE_URL={DATABASE_URL}", "REDIS_URL=redis://127.0.0.1:6390/0"]) == 0
    values = read_dotenv(path)
    assert set(values) == {"SECRET_KEY", "JWT_SECRET", "DJANGO_ENV", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
    assert values["DJANGO_ENV"] == "development" and values["ALLOWED_HOSTS"] == "127.0.0.1,localhost"
    assert values["DATABASE_URL"] == DATABASE_URL and values["REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert path.read_text().startswith("#")  # says what wrote it and that it is never overwritten
    # The generated secrets are strong enough for the configuration to accept: the file alone configures the app.
    config = load_config({**values, "DOTENV_FILE": "none"})
    assert config.jwt_secret == values["JWT_SECRET"]
    assert "added SECRET_KEY, JWT_SECRET" in capsys.readouterr().out


def test_each_new_file_gets_its_own_secrets(tmp_path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    main([str(first)])
    main([str(second)])
    a, b = read_dotenv(first), read_dotenv(second)
    assert a["SECRET_KEY"] != b["SECRET_KEY"] and a["JWT_SECRET"] != b["JWT_SECRET"]


def test_the_file_holding_the_secrets_is_readable_by_its_owner_only(tmp_path) -> None:
    path = tmp_path / ".env"
    old_umask = os.umask(0o022)  # a usual umask would leave a new file world-readable
    try:
        dotenv_complete(path, {"SECRET_KEY": "s" * 60})
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600


def test_a_second_run_changes_nothing(tmp_path, capsys) -> None:
    path = tmp_path / ".env"
    main([str(path), f"DATABASE_URL={DATABASE_URL}"])
    before = path.read_bytes()
    capsys.readouterr()
    assert main([str(path), f"DATABASE_URL={DATABASE_URL}"]) == 0
    assert path.read_bytes() == before  # no secret regenerated, no line repeated
    assert "complete, nothing added" in capsys.readouterr().out


def test_the_operators_values_are_never_overwritten(tmp_path) -> None:
    path = tmp_path / ".env"
    main([str(path)])
    edited = path.read_text().replace("DJANGO_ENV=development", "DJANGO_ENV=production")
    edited += "SECRET_KEY_NOTE=mine\n"
    path.write_text(edited)
    os.chmod(path, 0o640)  # the operator's choice of mode is theirs too
    appended = dotenv_complete(path, {"DJANGO_ENV": "development", "SECRET_KEY": "other" * 12, "NEW_VAR": "1"})
    assert appended == ["NEW_VAR"]
    assert path.read_text() == edited + "NEW_VAR=1\n"
    assert read_dotenv(path)["DJANGO_ENV"] == "production"
    assert mode(path) == 0o640


def test_variables_added_by_a_later_version_complete_an_old_file(tmp_path) -> None:
    path = tmp_path / ".env"
    old = "# an .env from an older version, edited by hand\nSECRET_KEY=" + "k" * 60 + "\nexport DEBUG='true'\n"
    path.write_text(old)
    assert main([str(path), "PAYMENT_GATEWAY_URL=http://127.0.0.1:8099"]) == 0
    text = path.read_text()
    assert text.startswith(old)  # what was there stays, byte for byte, and comes first
    values = read_dotenv(path)
    assert values["SECRET_KEY"] == "k" * 60 and values["DEBUG"] == "true"
    assert {"JWT_SECRET", "DJANGO_ENV", "ALLOWED_HOSTS", "PAYMENT_GATEWAY_URL"} <= set(values)
    assert text.count("SECRET_KEY=") == 1


def test_a_last_line_without_a_newline_keeps_its_value(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_text("SECRET_KEY=" + "k" * 60 + "\nDEBUG=true")  # saved by an editor that adds no final newline
    dotenv_complete(path, {"JWT_SECRET": "j" * 48})
    values = read_dotenv(path)
    assert values["DEBUG"] == "true" and values["JWT_SECRET"] == "j" * 48


def test_without_a_path_it_prints_its_usage_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_run_as_make_run_runs_it(tmp_path) -> None:
    path = tmp_path / ".env"
    command = [sys.executable, "-m", "resilience.config.devenv", str(path), f"DATABASE_URL={DATABASE_URL}"]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}  # no settings needed
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0 and "nothing added" in second.stdout
    assert read_dotenv(path)["DATABASE_URL"] == DATABASE_URL and mode(path) == 0o600
