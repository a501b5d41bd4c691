"""WSGI entry point: ``gunicorn settings.wsgi``.

A broken environment prints one report and exits with gunicorn's application-load error code (4),
so the master stops instead of respawning workers forever.

The Django application is wrapped in :class:`core.wsgi_limits.RequestLimitsMiddleware`: a request line or
headers over Bulwark's limits (gunicorn's own are set out of the way in ``gunicorn.conf.py``) are answered
there as the JSON error envelope, before Django. Outside it, :class:`resilience.serving.wsgi.ServingMiddleware`
gives each request its traffic class, bulkhead, body limit and time budget (``SERVING_POOL`` set: this server
answers that class and ops only).
"""

import os

from django.core.wsgi import get_wsgi_application

from core.wsgi_limits import RequestLimitsMiddleware
from resilience.config.startup import config_or_exit
from resilience.serving.wsgi import ServingMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
config_or_exit()
application = ServingMiddleware(RequestLimitsMiddleware(get_wsgi_application()))
