"""Create the development admin user once; on later runs keep it and say where its password is."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create a staff superuser with a generated password (kept in a 0600 file) unless it exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password-file", type=Path, required=True, help="Where the generated password is kept.")

    def handle(self, *args: Any, username: str, password_file: Path, **options: Any) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            where = f"its password is in {password_file}" if password_file.exists() else "its password was set earlier"
            self.stdout.write(f"Admin user kept: log in at /admin/ as '{username}'; {where}.")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email=f"{username}@localhost", password=password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n", encoding="utf-8")
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin user created: log in at /admin/ as '{username}' with password '{password}' "
                f"(kept in {password_file})."
            )
        )
