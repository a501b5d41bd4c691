"""Patroni's side: its REST API (who leads, who streams, how far behind), and the app role's bootstrap.

``GET /cluster`` on any live node lists every member as the DCS knows it (role ``leader``, ``sync_standby`` or
``replica``; state; timeline; lag in bytes); ``GET /patroni`` on the leader lists the walsenders, i.e. which
replicas really stream. A node whose Patroni is dead or hung simply does not answer (a 1 s timeout).
Patroni runs with Debian's ``/usr/bin/python3`` (its python3-etcd / python3-psycopg2), never this venv.
"""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path
from typing import Any

from ..procs import LOOPBACK, DevstackError

APP_USER = "bulwark"
APP_DB = "bulwark"


def find_patroni() -> str:
    found = shutil.which("patroni") or ("/usr/bin/patroni" if Path("/usr/bin/patroni").is_file() else None)
    if found is None:
        raise DevstackError(
            "patroni is not installed; devstack ha runs PostgreSQL under it. Install Debian's `patroni` package "
            "(`apt-get install patroni etcd-server etcd-client redis-sentinel haproxy`; scripts/bootstrap.sh does)."
        )
    return found


def find_etcd() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").is_file() else None)
    if found is None:
        raise DevstackError("etcd is not installed; install Debian's `etcd-server` package (Patroni's DCS).")
    return found


def rest(port: int, path: str, *, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 1.0):
    """(status, parsed JSON or None) of one REST call; (None, None) when the API does not answer."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()


def cluster_view(rest_ports: dict[str, int]) -> dict[str, Any] | None:
    """``GET /cluster`` from the first node that answers (members by name), or None if none answers."""
    for port in rest_ports.values():
        status, data = rest(port, "/cluster")
        if status == 200 and isinstance(data, dict):
            return {m["name"]: m for m in data.get("members", [])}
    return None


def leader_of(members: dict[str, Any] | None) -> str | None:
    if not members:
        return None
    for name, member in members.items():
        if member.get("role") in ("leader", "master", "standby_leader") and member.get("state") == "running":
            return name
    return None


def streaming_replicas(leader_rest_port: int) -> dict[str, str]:
    """application_name -> sync_state of the walsenders the leader reports streaming."""
    status, data = rest(leader_rest_port, "/patroni")
    if status != 200 or not isinstance(data, dict):
        return {}
    return {
        r["application_name"]: r.get("sync_state", "")
        for r in data.get("replication", []) or []
        if r.get("state") == "streaming"
    }


def bootstrap_sql(app_password: str) -> str:
    """The app role and database (idempotent). Only constants and [A-Za-z0-9_-] passwords are interpolated."""
    return f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}') THEN CREATE ROLE {APP_USER}; END IF;
END $$;
ALTER ROLE {APP_USER} WITH LOGIN CREATEDB PASSWORD '{app_password}';
SELECT 'CREATE DATABASE {APP_DB} OWNER {APP_USER}' WHERE NOT EXISTS
  (SELECT 1 FROM pg_database WHERE datname = '{APP_DB}') \\gexec
"""  # noqa: S608
