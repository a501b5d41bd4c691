"""The undivided pool the serving benchmark compares with: Bulwark's settings with the bulkheads off.

``DJANGO_SETTINGS_MODULE=bench.serving.undivided_settings`` (``settings/wsgi.py`` only sets the module by
default, so the environment wins). Requests are still classified, budgeted and counted exactly as with the
bulkheads on; only the refusal is gone: every class may take every one of a worker's threads, as in a server
with one thread pool for everything (``resilience/serving/bulkheads.py``, ``enabled=False``).
"""

from settings.base import *  # noqa: F403

SERVING_BULKHEADS = False
