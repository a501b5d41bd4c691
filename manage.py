#!/usr/bin/env python
"""Django's command-line utility. A broken environment stops here with one clear report (exit 2)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
    from resilience.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        sys.exit(2)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
