"""Start-up guard shared by the WSGI and ASGI entry points, and the once-per-process warning log."""

from __future__ import annotations

import logging
import sys

from resilience.config.loader import Config, ConfigError, load_config

# gunicorn's "application failed to load" code: its master stops instead of respawning workers forever.
APP_LOAD_ERROR = 4

logger = logging.getLogger("resilience.config")


def config_or_exit(exit_code: int = APP_LOAD_ERROR) -> Config:
    """The configuration, or the one-paragraph report on stderr and an exit without a traceback."""
    try:
        return load_config()
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr, flush=True)
        raise SystemExit(exit_code) from None


# Set in the gunicorn master once it has logged the warnings; forked workers inherit it and stay quiet.
warnings_logged = False


def log_config_warnings(config: Config) -> None:
    """Log each fallback and SPOF warning once: by the gunicorn master, or by a process started on its own."""
    global warnings_logged
    if warnings_logged:
        return
    warnings_logged = True
    for finding in config.warnings:
        kind = "single point of failure" if finding.spof else "configuration"
        logger.warning(
            "%s: %s: %s", kind, finding.name, finding.message, extra={"variable": finding.name, "area": finding.area}
        )
