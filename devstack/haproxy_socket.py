"""HAProxy's admin socket (``stats socket ... level admin``): one command, its reply. Used by the split pools
(:mod:`devstack.pools`) and the scale-out topology (:mod:`devstack.ha.haproxy_admin`)."""

from __future__ import annotations

import socket
from pathlib import Path


def admin_command(path: Path | str, line: str, timeout: float = 2.0) -> str:
    """One command on the admin socket at ``path``; its reply ('' when there is no socket or it does not answer)."""
    if not path:
        return ""
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
