"""WSGI entry point: ``gunicorn settings.wsgi``.

A broken environment prints one report and exits with gunicorn's application-load error code
(4), so the master stops instead of respawning workers forever.
"""

import os
import sys

from django.core.wsgi import get_wsgi_application

from resilience.config import ConfigError, load_config

GUNICORN_APP_LOAD_ERROR = 4

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
try:
    load_config()
except ConfigError as exc:
    print(exc.report(), file=sys.stderr, flush=True)
    sys.exit(GUNICORN_APP_LOAD_ERROR)
application = get_wsgi_application()
