"""For benchmarks only: ``settings/wsgi.py`` without the serving layer (bulkheads, time budgets, traffic classes).

``DJANGO_SETTINGS_MODULE=settings.baseline gunicorn settings.baseline_wsgi`` serves the app as ``settings.baseline``
describes: the HTTP limits (``core.wsgi_limits``) are kept, :class:`resilience.serving.wsgi.ServingMiddleware` is
not. Used by ``python -m bench.hotpaths`` as the "resilience layer off" server.
"""

import os

from django.core.wsgi import get_wsgi_application

from core.wsgi_limits import RequestLimitsMiddleware
from resilience.config.startup import config_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.baseline")
config_or_exit()
application = RequestLimitsMiddleware(get_wsgi_application())
