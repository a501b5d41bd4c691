"""devstack: throwaway local PostgreSQL primary + streaming replica + Redis for development and tests.

Usage (CLI)::

    python -m devstack [--name NAME] [--port-base N] COMMAND
        up | down | status [--json] | env | promote | delay SECONDS
        kill NODE | hang NODE | slow NODE | resume NODE | start NODE | stop NODE | restart NODE
                                                            (NODE: primary, replica, redis)

Usage (Python)::

    from devstack import Stack
    s = Stack(name="sys-x", port_base=57000)
    env = s.up()          # DATABASE_URL, DATABASE_REPLICA_URLS, DATABASE_URL_MULTIHOST, REDIS_URL, DEVSTACK_*
    s.kill("primary"); s.start("primary"); s.hang("replica"); s.resume("replica"); s.promote(); s.down()

Real processes on 127.0.0.1, ports N (primary), N+1 (replica), N+2 (redis). ``make run`` uses name ``dev`` /
port base 63432, ``make test`` name ``test`` / 63532. Data lives under the system temp dir
(``<tmp>/bulwark-devstack-<hash of the checkout>/<name>/``); ``<checkout>/.stack/<name>/`` holds only state
and log symlinks. When run as root, PostgreSQL runs as the ``postgres`` system user.

Environment knobs (all optional): ``DEVSTACK_TMPDIR`` puts the server files somewhere other than the system
temp dir -- e.g. ``/dev/shm``, which makes ``up`` several times faster where creating files on disk is slow
(costs RAM: ~100 MB per stack, more if lots of WAL is written); ``DEVSTACK_PG_BINDIR`` and
``DEVSTACK_REDIS_SERVER`` pick the server binaries.

The clusters run with ``fsync=off``, ``synchronous_commit=off`` and ``full_page_writes=off``: durability is
traded for speed. Fine for throwaway dev/test data (and for the kill/hang crash tests, which do not lose
page cache); never point anything valuable at it.

Modules: :mod:`devstack.stack` (orchestration: the :class:`Stack` class -- up, down, start, stop, restart,
status, env, wait_streaming, psql), :mod:`devstack.faults` (fault injection: kill, hang, slow -- a
SIGSTOP/SIGCONT duty cycle run by :mod:`devstack.throttle` --, resume, promote, apply delay; inherited by
``Stack``), :mod:`devstack.state` (identity, run dir, ``state.json``, the per-stack
lock, ports; the base of both), :mod:`devstack.postgres` (one PostgreSQL node, the initdb template),
:mod:`devstack.redis`, :mod:`devstack.procs` (run-as-postgres, /proc, signals, ports), :mod:`devstack.__main__`
(CLI), :mod:`devstack.fake_gateway` (a fake payment gateway for tests).

``python -m devstack ha ...`` (:mod:`devstack.ha`) is a separate, production-shaped topology: etcd, three
Patroni-managed PostgreSQL nodes, Redis + three Sentinels, HAProxy and two app hosts, with durable settings and
the configurations under ``deploy/`` (name ``ha``, port base 64000 by default).
"""

from .procs import DevstackError
from .stack import Stack

__all__ = ["DevstackError", "Stack"]
