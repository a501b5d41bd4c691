"""HAProxy's admin socket: each backend server's check status (``show stat``), for ``status`` and the waits."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..haproxy_socket import admin_command

BACKENDS = ("primary", "replicas", "app")


def servers(path: Path | str) -> dict[tuple[str, str], str]:
    """(backend, server) -> UP, DOWN, UP 1/2, MAINT... for the primary, replicas and app backends; {} if none."""
    reply = admin_command(path, "show stat")
    if not reply:
        return {}
    rows = csv.DictReader(io.StringIO(reply.lstrip("# ")))
    return {
        (row["pxname"], row["svname"]): row["status"]
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname") in BACKENDS
    }
