"""prometheus_client's multiprocess mode: one metrics directory per server, shared by its gunicorn workers.

Each gunicorn worker keeps its own counters; without a shared directory successive scrapes of ``/metrics`` would
read one worker's numbers, then another's. ``PROMETHEUS_MULTIPROC_DIR`` must be set before anything imports
``prometheus_client`` (the value class is chosen at import) and the directory must exist, else the first metric
update fails. So:

- ``gunicorn.conf.py`` calls :func:`multiprocess_dir_prepare` with ``server=True`` at its top: the directory
  ``<temp>/bulwark-metrics-<uid>-<port>``, inherited by every worker the master forks. It is emptied once per
  master (:func:`multiprocess_wipe`: files of an earlier run would be summed in), at that call, before the
  configuration file goes on to import modules that create metrics in the master (``on_starting`` calls it too:
  a no-op by then; a reload on HUP keeps the workers' counts). :func:`worker_exit` in ``child_exit`` drops a
  dead worker's live-mode gauges (``mark_process_dead``).
- Any other process (``manage.py``, tests, another WSGI server) calls it from the settings: a private directory,
  removed when the process exits, unless the process is a worker of the gunicorn master that set the shared one.
- If ``prometheus_client`` was imported before the call, it is too late to switch: the process keeps
  single-process metrics (``/metrics`` then reads this process's registry) and nothing is changed.

A Gauge in the default mode (``all``) keeps one series per dead worker; every Bulwark gauge uses a ``live*`` mode.
In multiprocess mode ``process_*``, ``python_gc_*``, custom collectors and ``*_created`` series are not exported.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("resilience.observability")

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_SERVER_PID = "BULWARK_METRICS_SERVER_PID"  # the gunicorn master that owns ENV_DIR (its workers keep it)
_wiped_by: int | None = None  # the process that emptied the directory (once per master)


def _too_late() -> bool:
    return "prometheus_client.values" in sys.modules


def server_dir(port: int) -> Path:
    """The shared directory of the server listening on ``port`` (per user: two users' servers never collide)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"bulwark-metrics-{uid}-{port}"


def multiprocess_dir_prepare(config: Any, *, server: bool = False) -> Path | None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (and create the directory) for this process; returns it, or None when
    ``prometheus_client`` is already imported in single-process mode (too late to switch)."""
    current = os.environ.get(ENV_DIR)
    if _too_late():
        if current:
            Path(current).mkdir(parents=True, exist_ok=True)  # the mode is fixed: at least let updates succeed
            return Path(current)
        logger.debug("prometheus_client imported before the metrics directory was set: single-process metrics")
        return None
    if server:
        path = server_dir(int(getattr(config, "port", 8000) or 8000))
        os.environ[ENV_SERVER_PID] = str(os.getpid())
        os.environ[ENV_DIR] = str(path)
        multiprocess_wipe()
    elif current and os.environ.get(ENV_SERVER_PID) == str(os.getppid()):
        path = Path(current)  # a worker of the gunicorn master that set up the shared directory
    else:
        path = Path(tempfile.mkdtemp(prefix=f"bulwark-metrics-{os.getpid()}-"))
        os.environ.pop(ENV_SERVER_PID, None)
        atexit.register(_remove_private, path, os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(path)
    return path


def _remove_private(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child exiting must not remove its parent's directory
        shutil.rmtree(path, ignore_errors=True)


def multiprocess_wipe() -> None:
    """Empty the shared directory, once per process (the gunicorn master): an earlier run's files would be summed
    in; a second call (``on_starting``, a reload) keeps what the workers have counted."""
    global _wiped_by
    current = os.environ.get(ENV_DIR)
    if not current or _wiped_by == os.getpid():
        return
    _wiped_by = os.getpid()
    path = Path(current)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):
        entry.unlink(missing_ok=True)


def worker_exit(pid: int) -> None:
    """A worker is gone (gunicorn's ``child_exit``): drop its live-mode gauges; its counters stay in the totals."""
    if not os.environ.get(ENV_DIR):
        return
    from prometheus_client import multiprocess  # the master imports it only now, after the variable is set

    multiprocess.mark_process_dead(pid)
