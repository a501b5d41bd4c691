"""ASGI entry point. A broken environment prints one report and exits (code 4) before serving."""

import os

from django.core.asgi import get_asgi_application

from resilience.config.startup import config_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
config_or_exit()
application = get_asgi_application()
