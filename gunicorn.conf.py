"""gunicorn settings, picked up by a plain ``gunicorn settings.wsgi`` run from the project root.

Port and worker count come from the environment through ``resilience.config``. With a broken
environment the defaults are used here and the worker's application load reports every problem
and exits with code 4, which makes the master stop instead of respawning workers forever.
"""

import functools

from gunicorn.http.message import Request

from resilience.config import ConfigError, load_config
from resilience.config.startup import log_config_warnings
from resilience.observability import multiprocess as metrics_multiprocess  # a module: worker_exit is a gunicorn hook

try:
    _config = load_config()
    _port, _workers = _config.port, _config.web_concurrency
except ConfigError:
    _config, _port, _workers = None, 8000, 1
_threads = _config.serving.threads if _config is not None else 8
# One metrics directory shared by the workers (PROMETHEUS_MULTIPROC_DIR), set before they import prometheus_client.
metrics_multiprocess.multiprocess_dir_prepare(_config, server=True)
# One logging set-up for gunicorn and Django: the master's and workers' records (gunicorn.error, gunicorn.access)
# go through the same bounded queue as JSON (resilience/observability/logs.py). Imported after the line above.
from resilience.observability.logs import log_listener_start, logging_config  # noqa: E402

logconfig_dict = logging_config(_config)


def on_starting(server: object) -> None:
    """The master logs the configuration's warnings once; the workers it forks do not repeat them."""
    metrics_multiprocess.multiprocess_wipe()  # an earlier run's metric files would be summed into this one's
    if _config is not None:
        log_config_warnings(_config)


def post_fork(server: object, worker: object) -> None:
    """Each worker starts tracing after the fork and before it loads the application: the Django instrumentor
    adds its middleware to settings.MIDDLEWARE, which Django reads once when the application is built (too
    late in post_worker_init). Nothing when the configuration is broken: the application load reports it."""
    log_listener_start()  # this worker's log listener (already started by the at-fork hook: then a no-op)
    if _config is not None:
        from resilience.observability.tracing import tracing_start

        tracing_start(_config)


def post_worker_init(worker: object) -> None:
    """Each worker starts its database monitor and its dashboard snapshot at once, not on its first request: a
    worker that has not served yet is already watching the nodes and shows on the dashboard."""
    from resilience.db.monitor import monitor_start  # Django is set up by now (the worker loaded the app)
    from resilience.health.workers import publisher_start
    from resilience.observability.tracing import log_filter_install

    monitor_start()
    publisher_start()
    log_filter_install()  # trace_id/span_id on the log records (Django's LOGGING has replaced the handlers)


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its live gauges leave /metrics (its counters stay in the totals)."""
    metrics_multiprocess.worker_exit(worker.pid)  # type: ignore[attr-defined]


wsgi_app = "settings.wsgi:application"
bind = [f"127.0.0.1:{_port}"]
workers = _workers
worker_class = "gthread"
# WEB_THREADS: every traffic class's bulkhead but ops's stays below it, so each worker keeps a thread for health
# probes and scrapes (resilience/serving/bulkheads.py). Connections beyond the busy threads wait in gunicorn's
# queue (up to `backlog` in the kernel before that), before Bulwark sees them.
threads = _threads
timeout = 30
graceful_timeout = 20
keepalive = 5
# gunicorn's request limits, out of Bulwark's way. gunicorn answers its own limit errors with an HTML page;
# Bulwark's limits (4 KiB request line, 100 headers, 16 KiB a header, 32 KiB for Authorization, 64 KiB in
# all) are enforced as JSON errors by core/wsgi_limits.py, so gunicorn's must sit above them:
# - limit_request_line: 0 turns gunicorn's check off (any other value is at most 8190, so a 9 KiB query would
#   be gunicorn's HTML 414). With the pure-Python parser installed here (no gunicorn_h1c), 0 is truly
#   unlimited and reading a long line costs quadratic time (a 16 MB line: 17 s of CPU holding the GIL), so
#   _bound_request_parsing() below caps it at GUNICORN_MAX_REQUEST_LINE, as gunicorn_h1c does for 0.
# - limit_request_fields: at most 32768; 0 or less means 32768.
# - limit_request_field_size: one header line, name + ": " + value + CRLF; 0 means 8190, not unlimited.
# - gunicorn reads the whole head into a buffer of fields x (field size + 2) bytes (here about 62 MiB, also
#   read in quadratic time), which _bound_request_parsing() caps at GUNICORN_MAX_HEAD.
limit_request_line = 0
limit_request_fields = 1000
limit_request_field_size = 65_536
GUNICORN_MAX_REQUEST_LINE = 1_048_576  # 1 MiB, as gunicorn_h1c caps limit_request_line = 0
GUNICORN_MAX_HEAD = 1_048_576  # 1 MiB
# What still answers before Bulwark, as gunicorn's HTML page (tests/system/test_http_limits.py shows both):
# - a request line over GUNICORN_MAX_REQUEST_LINE (414), a head over GUNICORN_MAX_HEAD, more than
#   limit_request_fields headers or one over limit_request_field_size (431);
# - what gunicorn cannot parse: a malformed request line, method or HTTP version, a header name or value
#   with forbidden characters, a line ending in a bare LF, obsolete line folding, a bad Content-Length or
#   Transfer-Encoding (400; 501 for an unknown transfer coding);
# - an Expect other than 100-continue (417).
# A reverse proxy in front answers its own limits first: make it answer them as JSON too.


def _bound_request_parsing() -> None:
    """Cap the request line and head gunicorn reads at the sizes above, whatever parser it uses.

    gunicorn computes both limits in ``Message.__init__`` just before it calls ``parse``, so ``parse`` is
    wrapped to lower them (only ever lower them). gunicorn is pinned (requirements.txt), and
    tests/system/test_http_limits.py sends a line and a head one byte over these caps and expects gunicorn's
    refusal (uncapped, gunicorn would wait for more), so a gunicorn that parses differently fails the suite,
    not production. Idempotent: the master re-reads this file on HUP.
    """
    original = Request.parse
    if getattr(original, "bulwark_bounded", False):
        return

    @functools.wraps(original)
    def parse(self: Request, unreader: object) -> bytes:
        if not 0 < self.limit_request_line <= GUNICORN_MAX_REQUEST_LINE:
            self.limit_request_line = GUNICORN_MAX_REQUEST_LINE
        self.max_buffer_headers = min(self.max_buffer_headers, GUNICORN_MAX_HEAD)
        return original(self, unreader)

    parse.bulwark_bounded = True  # type: ignore[attr-defined]
    Request.parse = parse  # type: ignore[method-assign]


_bound_request_parsing()

# gunicorn 27's control socket defaults to one path per user: several servers on one machine would share it.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s class=%({x-traffic-class}o)s'
