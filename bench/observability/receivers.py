"""Stand-ins for OTLP/HTTP trace collectors on loopback: one that answers, one that hangs, and a dead port.

The answering one counts the export requests it took (``POST /v1/traces`` → 200 with an empty protobuf body);
the hung one accepts connections and never reads or answers, as a collector stuck in a GC pause or behind a
black-holed load balancer does.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.harness import HOST, free_port


class Collector:
    """An OTLP/HTTP receiver that accepts every export."""

    def __init__(self) -> None:
        self.exports = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HungCollector:
    """Accepts connections and never answers: every export waits for its own timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}/v1/traces"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)  # held open, never read: the client's send and wait hang

    def stop(self) -> None:
        self._stop.set()
        for conn in self._held:
            conn.close()
        self.sock.close()


def dead_url() -> str:
    """A loopback port where nothing listens: every export is refused at once."""
    return f"http://{HOST}:{free_port()}/v1/traces"
