"""WSGI entry point: ``gunicorn settings.wsgi``.

A broken environment prints one report and exits with gunicorn's application-load error code (4),
so the master stops instead of respawning workers forever.
"""

import os

from django.core.wsgi import get_wsgi_application

from resilience.config.startup import config_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
config_or_exit()
application = get_wsgi_application()
