"""gunicorn settings, picked up by a plain ``gunicorn settings.wsgi`` run from the project root.

Port and worker count come from the environment through ``resilience.config``. With a broken
environment the defaults are used here and the worker's application load reports every problem
and exits with code 4, which makes the master stop instead of respawning workers forever.
"""

import logging

from resilience.config import ConfigError, load_config
from resilience.config.startup import log_config_warnings

try:
    _config = load_config()
    _port, _workers = _config.port, _config.web_concurrency
except ConfigError:
    _config, _port, _workers = None, 8000, 1


def on_starting(server: object) -> None:
    """The master logs the configuration's warnings once; the workers it forks do not repeat them."""
    if _config is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        log_config_warnings(_config)


wsgi_app = "settings.wsgi:application"
bind = [f"127.0.0.1:{_port}"]
workers = _workers
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
# Oversized bearer tokens must reach the JSON error path (token_not_valid), not gunicorn's HTML 400.
limit_request_field_size = 32768
# gunicorn 27's control socket defaults to one path per user: several servers on one machine would share it.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
