#!/usr/bin/env python
"""Django's command-line utility.

``validate_env`` runs before Django's set-up, so it works when the settings cannot load. Any other
command with a broken environment stops here with one report listing every problem (exit 2).
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
    if sys.argv[1:2] == ["validate_env"]:
        from resilience.config.validate import main as validate_env

        sys.exit(validate_env(sys.argv[2:]))
    from resilience.observability.logs import log_to_stderr

    log_to_stderr()  # a command's stdout is its output; its log records go to stderr
    from resilience.config.startup import config_or_exit

    config_or_exit(exit_code=2)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
