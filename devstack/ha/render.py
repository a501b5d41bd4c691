"""The configuration files of the topology, rendered from the reference templates under ``deploy/``.

``deploy/patroni/patroni.yml``, ``deploy/etcd/etcd.conf.yml``, ``deploy/sentinel/redis.conf``,
``deploy/sentinel/sentinel.conf`` and ``deploy/haproxy/ha.cfg`` are the documented configurations; devstack ha
fills their ``${placeholders}`` (:class:`string.Template`, every placeholder required) and runs exactly that, so
the reference and what the tests exercise cannot drift. Nothing here starts a process.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from ..procs import DevstackError
from .topology import MASTER_NAME, PG_NODES, SCOPE, Topology

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATES = {
    "patroni": DEPLOY / "patroni" / "patroni.yml",
    "etcd": DEPLOY / "etcd" / "etcd.conf.yml",
    "redis": DEPLOY / "sentinel" / "redis.conf",
    "sentinel": DEPLOY / "sentinel" / "sentinel.conf",
    "haproxy": DEPLOY / "haproxy" / "ha.cfg",
}
REPLICATION_USER = "replicator"


def render(kind: str, **values: Any) -> str:
    path = TEMPLATES[kind]
    try:
        return Template(path.read_text()).substitute({key: str(value) for key, value in values.items()})
    except KeyError as error:
        raise DevstackError(f"{path} has a placeholder devstack does not fill: {error}.") from None
    except (OSError, ValueError) as error:
        raise DevstackError(f"cannot render {path}: {error}.") from None


def patroni(topo: Topology, node: str, passwords: dict[str, str], bin_dir: Path) -> str:
    base = topo.node_dir(node)
    return render(
        "patroni",
        scope=SCOPE,
        name=node,
        host=topo.host,
        rest_port=topo.rest_port(node),
        pg_port=topo.pg_port(node),
        etcd_hosts=f"{topo.host}:{topo.etcd_port}",
        data_dir=base / "data",
        socket_dir=base / "s",
        pgpass=base / "pgpass",
        bin_dir=bin_dir,
        superuser_password=passwords["postgres"],
        replication_user=REPLICATION_USER,
        replication_password=passwords[REPLICATION_USER],
    )


def etcd(topo: Topology, token: str) -> str:
    return render(
        "etcd",
        name="etcd1",
        host=topo.host,
        data_dir=topo.node_dir("etcd") / "data",
        client_port=topo.etcd_port,
        peer_port=topo.etcd_peer_port,
        token=token,
    )


def redis(topo: Topology, node: str, replicaof: int | None) -> str:
    text = render("redis", host=topo.host, port=topo.redis_port(node), dir=topo.node_dir(node))
    if replicaof is not None:
        text += "\n# Added by devstack ha: this node starts as a replica of the current master.\n"
        text += f"replicaof {topo.host} {replicaof}\n"
    return text


def sentinel(topo: Topology, node: str, master_port: int) -> str:
    return render(
        "sentinel",
        host=topo.host,
        port=topo.sentinel_port(node),
        dir=topo.node_dir(node),
        master_name=MASTER_NAME,
        master_host=topo.host,
        master_port=master_port,
    )


def haproxy(topo: Topology) -> str:
    values: dict[str, Any] = {
        "host": topo.host,
        "admin_socket": topo.admin_socket,
        "primary_port": topo.primary_port,
        "replicas_port": topo.replicas_port,
        "app_port": topo.app_port,
        "stats_port": topo.stats_port,
        "app1_port": topo.app_member_port("app-1"),
        "app2_port": topo.app_member_port("app-2"),
    }
    for node in PG_NODES:
        values[f"{node}_port"] = topo.pg_port(node)
        values[f"{node}_rest_port"] = topo.rest_port(node)
    return render("haproxy", **values)
