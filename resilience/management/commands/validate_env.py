"""``validate_env`` as a Django command too (``call_command``, ``manage.py help``); manage.py runs it before set-up."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from resilience.config.validate import main as validate_env


class Command(BaseCommand):
    help = "SPOF analysis of the environment. Exit 0 valid, 1 valid but a critical SPOF, 2 invalid."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output, areas as in /health")

    def handle(self, *args: Any, **options: Any) -> None:
        code = validate_env(["--json"] if options["json"] else [], out=self.stdout)
        if code:
            raise SystemExit(code)
