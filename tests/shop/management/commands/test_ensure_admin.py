"""``ensure_admin`` (``make run``): the development admin is created once, with a generated password kept in a
file only its owner can read; later runs keep the user and its password."""

from __future__ import annotations

import os
import stat
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_the_first_run_creates_a_superuser_whose_password_is_printed_and_kept(tmp_path, client) -> None:
    password_file = tmp_path / "dev" / "admin_password"  # its directory does not exist yet
    old_umask = os.umask(0o022)  # a usual umask would leave a new file world-readable
    try:
        output = ensure_admin("--password-file", str(password_file))
    finally:
        os.umask(old_umask)
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert len(password) >= 16
    assert "/admin/" in output and "'admin'" in output and f"'{password}'" in output and str(password_file) in output
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser and admin.is_active and admin.check_password(password)
    # The printed login works.
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": password})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_later_runs_keep_the_user_and_its_password(tmp_path) -> None:
    password_file = tmp_path / "admin_password"
    ensure_admin("--password-file", str(password_file))
    password = password_file.read_text().strip()
    admin = get_user_model().objects.get(username="admin")

    output = ensure_admin("--password-file", str(password_file))

    assert "kept" in output and str(password_file) in output
    assert password not in output  # said once, at creation
    assert password_file.read_text().strip() == password
    again = get_user_model().objects.get(username="admin")
    assert again.pk == admin.pk and again.password == admin.password  # not reset
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_an_existing_user_is_kept_even_without_the_password_file(tmp_path) -> None:
    get_user_model().objects.create_superuser(username="admin", email="a@example.com", password="chosen-by-hand")
    password_file = tmp_path / "admin_password"
    output = ensure_admin("--password-file", str(password_file))
    assert "kept" in output and "set earlier" in output
    assert not password_file.exists()  # no password invented for a user that has one
    assert get_user_model().objects.get(username="admin").check_password("chosen-by-hand")


def test_another_username(tmp_path) -> None:
    output = ensure_admin("--username", "ops", "--password-file", str(tmp_path / "ops_password"))
    assert "'ops'" in output
    assert get_user_model().objects.get(username="ops").is_superuser
    assert not get_user_model().objects.filter(username="admin").exists()


def test_the_password_file_is_required() -> None:
    with pytest.raises(CommandError, match="password-file"):
        ensure_admin()
