"""Where every process of the scale-out topology listens and keeps its files: one port base, one run directory.

Every port is ``N + offset`` (``N`` = ``--port-base``, default 64000), all on 127.0.0.1:

======  ==============================================================
N+0     HAProxy ``primary``: PostgreSQL read-write (DATABASE_URL)
N+1     HAProxy ``replicas``: PostgreSQL read-only (DATABASE_REPLICA_URLS)
N+2     HAProxy ``app``: the two Bulwark hosts (BULWARK_HA_APP_URL)
N+3     HAProxy stats page ``/stats``
N+10..  PostgreSQL of pg1, pg2, pg3
N+20..  Patroni REST API of pg1, pg2, pg3
N+30    etcd client URL (N+31: its peer URL)
N+40    redis-1 (the first master), N+41 redis-2 (its first replica)
N+50..  sentinel-1, sentinel-2, sentinel-3
N+60    app-1, N+61 app-2 (gunicorn)
======  ==============================================================

The default base keeps clear of devstack's own stack (63432), the test stack (63532) and the system tests'
fixed bases (62400-62840). Processes of the same kind get consecutive ports so a glance at ``ss -ltn`` tells
what is what.

Files: ``.stack/<name>/ha/ha.json`` (mode 600: ports, pids with their start times, passwords) in the checkout,
and everything the servers touch in ``<tmp>/bulwark-devstack-<hash>/ha-<name>/`` (``<tmp>`` as for devstack's
stack: ``$DEVSTACK_TMPDIR`` or the system temp dir), because the ``postgres`` user -- Patroni and PostgreSQL run
as it when we are root -- may not be able to enter the checkout. A node's directory (``pg1/``: ``data/``, socket
dir ``s/``, ``patroni.yml``, ``pgpass``) is owned by that user, mode 700.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..postgres import temp_base
from ..procs import LOOPBACK, DevstackError

DEFAULT_NAME = "ha"
DEFAULT_PORT_BASE = 64000
SPAN = 62  # ports N .. N+61
PG_NODES = ("pg1", "pg2", "pg3")
REDIS_NODES = ("redis-1", "redis-2")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
APPS = ("app-1", "app-2")
MASTER_NAME = "bulwark"  # the Sentinels' monitor name (REDIS_SENTINEL_MASTER)
SCOPE = "bulwark"  # the Patroni cluster's name
RESERVED_PORTS = {5432: "the machine's own PostgreSQL", 6379: "the machine's own Redis", 26379: "a Sentinel"}

# Every process devstack ha runs, in start order (down stops them in reverse).
PROCESSES = ("etcd", *PG_NODES, *REDIS_NODES, *SENTINELS, "haproxy", *APPS)


@dataclass(frozen=True)
class Topology:
    """Ports and paths of one named topology."""

    name: str
    port_base: int
    project_root: Path
    tmp: Path | None = None  # where the run directory lives (None: devstack's temp dir, see temp_base())

    def __post_init__(self) -> None:
        if not 1024 <= self.port_base <= 65535 - SPAN:
            raise DevstackError(f"--port-base must be between 1024 and {65535 - SPAN} (got {self.port_base}).")
        for port, what in RESERVED_PORTS.items():
            if self.port_base <= port < self.port_base + SPAN:
                raise DevstackError(
                    f"port base {self.port_base} would use port {port}, which belongs to {what}; choose another "
                    f"--port-base (devstack ha uses N .. N+{SPAN - 1})."
                )
        sock = self.node_dir("pg3") / "s" / f".s.PGSQL.{self.pg_port('pg3')}"
        if len(str(sock)) > 100:
            raise DevstackError(
                f"the unix socket path {sock} would exceed the kernel's ~107 byte limit; use a shorter name or a "
                "shorter DEVSTACK_TMPDIR."
            )

    host = LOOPBACK

    # ---- ports ------------------------------------------------------------------------------------------------

    @property
    def primary_port(self) -> int:
        return self.port_base

    @property
    def replicas_port(self) -> int:
        return self.port_base + 1

    @property
    def app_port(self) -> int:
        return self.port_base + 2

    @property
    def stats_port(self) -> int:
        return self.port_base + 3

    def pg_port(self, node: str) -> int:
        return self.port_base + 10 + PG_NODES.index(node)

    def rest_port(self, node: str) -> int:
        return self.port_base + 20 + PG_NODES.index(node)

    @property
    def etcd_port(self) -> int:
        return self.port_base + 30

    @property
    def etcd_peer_port(self) -> int:
        return self.port_base + 31

    def redis_port(self, node: str) -> int:
        return self.port_base + 40 + REDIS_NODES.index(node)

    def sentinel_port(self, node: str) -> int:
        return self.port_base + 50 + SENTINELS.index(node)

    def app_member_port(self, node: str) -> int:
        return self.port_base + 60 + APPS.index(node)

    def ports(self, process: str) -> list[int]:
        """The ports ``process`` listens on (what must be free before it starts)."""
        if process == "etcd":
            return [self.etcd_port, self.etcd_peer_port]
        if process in PG_NODES:
            return [self.pg_port(process), self.rest_port(process)]
        if process in REDIS_NODES:
            return [self.redis_port(process)]
        if process in SENTINELS:
            return [self.sentinel_port(process)]
        if process == "haproxy":
            return [self.primary_port, self.replicas_port, self.app_port, self.stats_port]
        if process in APPS:
            return [self.app_member_port(process)]
        raise DevstackError(f"unknown process {process!r}.")

    # ---- paths ------------------------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.project_root / ".stack" / self.name / "ha"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "ha.json"

    @property
    def run_root(self) -> Path:
        digest = hashlib.sha1(str(self.project_root).encode(), usedforsecurity=False).hexdigest()[:10]
        return (self.tmp or temp_base()) / f"bulwark-devstack-{digest}"

    @property
    def run_dir(self) -> Path:
        return self.run_root / f"ha-{self.name}"

    def node_dir(self, process: str) -> Path:
        return self.run_dir / process

    def log(self, process: str) -> Path:
        # Beside, not inside, a node's directory (a PostgreSQL node's is the postgres user's, mode 700).
        return self.run_dir / f"{process}.log"

    @property
    def admin_socket(self) -> Path:
        return self.node_dir("haproxy") / "admin.sock"

    def urls(self) -> dict[str, str]:
        return {
            "app": f"http://{self.host}:{self.app_port}",
            "stats": f"http://{self.host}:{self.stats_port}/stats",
        }


def project_root_default() -> Path:
    return Path(os.path.realpath(Path(__file__).resolve().parents[2]))
