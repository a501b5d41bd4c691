"""The two Bulwark hosts' environment and their migrations (``manage.py migrate`` through HAProxy's primary).

A host gets this process's environment without what would point it elsewhere (``DATABASE_*``, ``REDIS_URL``,
``DJANGO_SETTINGS_MODULE``, ``DEVSTACK_*``), then ``ha env``'s variables and ``TRUSTED_PROXY_COUNT=1`` (it sits
behind HAProxy), and reads ``.env`` itself as ``make run``'s server does. Both hosts must sign and check the same
sessions and tokens: when neither the environment nor ``.env`` gives ``SECRET_KEY`` / ``JWT_SECRET``, the
topology's own (generated into ha.json) are used; ``DJANGO_ENV`` and ``ALLOWED_HOSTS`` get development defaults
the same way. The result is validated as a host reads it before anything starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from ..procs import DevstackError

if TYPE_CHECKING:
    from .cluster import Cluster

DROPPED = ("DATABASE_URL", "DATABASE_REPLICA_URLS", "DATABASE_URL_MULTIHOST", "REDIS_URL", "DJANGO_SETTINGS_MODULE")


def environment(cluster: Cluster, state: dict[str, Any]) -> dict[str, str]:
    from resilience.config.env import dotenv_read
    from resilience.config.loader import ConfigError, dotenv_path, load_config

    env = {k: v for k, v in os.environ.items() if k not in DROPPED and not k.startswith(("DEVSTACK_", "PG"))}
    env.update(cluster.env(state))
    env["TRUSTED_PROXY_COUNT"] = "1"
    dotenv = dotenv_read(dotenv_path(env)).values
    defaults = {
        **state["secrets"],
        "DJANGO_ENV": "development",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    for key, value in defaults.items():
        if key not in env and key not in dotenv:
            env[key] = value
    try:
        load_config({**dotenv, **env, "WEB_CONCURRENCY": str(state["workers"])})
    except ConfigError as error:
        problems = "; ".join(problem.rstrip(".") for problem in error.problems)
        raise DevstackError(
            f"the app hosts' environment is invalid: {problems}. Fix .env or the environment (`python manage.py "
            "validate_env` shows the whole analysis)."
        ) from None
    return env


def migrate(cluster: Cluster, env: dict[str, str], timeout: float = 300.0) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=cluster.topo.project_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DevstackError(f"manage.py migrate did not finish within {timeout:.0f} s.") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DevstackError(f"manage.py migrate failed (exit {proc.returncode}):\n{tail}")
