"""HAProxy's admin socket: each backend server's check status (``show stat``), for ``status`` and the waits."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

BACKENDS = ("primary", "replicas", "app")


def command(path: Path | str, line: str, timeout: float = 2.0) -> str:
    """One command on the admin socket; its reply ('' when the socket does not answer)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


def servers(path: Path | str) -> dict[tuple[str, str], str]:
    """(backend, server) -> UP, DOWN, UP 1/2, MAINT... for the primary, replicas and app backends; {} if none."""
    reply = command(path, "show stat")
    if not reply:
        return {}
    rows = csv.DictReader(io.StringIO(reply.lstrip("# ")))
    return {
        (row["pxname"], row["svname"]): row["status"]
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname") in BACKENDS
    }
