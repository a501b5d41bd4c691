"""A fake payment gateway for development and tests: the API of docs/payment_gateway.md, switchable modes.

Usage::

    python -m devstack.fake_gateway --port 63440 [--mode succeed] [--pid-file PATH]
    curl -X POST http://127.0.0.1:63440/_control -d '{"mode": "decline"}'     # succeed | decline | fail | hang
    curl http://127.0.0.1:63440/_charges                                      # what was charged, and how often asked

In Python (tests)::

    with FakeGateway() as gateway:            # a free loopback port, served from a background thread
        gateway.url; gateway.set_mode("hang"); gateway.charges(); gateway.charge_count()

Modes: ``succeed`` charges, ``decline`` records a declined charge (201, status declined), ``fail`` answers
500 to every gateway call, ``hang`` holds every gateway call without a byte of answer until the mode changes
(or ``hang_seconds`` pass, then 503). ``fail`` and ``hang`` hit lookups and replays too: the whole service
is down. Charges are idempotent by key: the same key never charges twice (a replay answers 200 with the
first charge; the same key with another amount, currency or reference is a 409).

Development and test tooling only: nothing in ``resilience`` or ``shop`` imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

MODES = ("succeed", "decline", "fail", "hang")
DECLINE_MESSAGE = "Card declined (insufficient funds)."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    gateway: FakeGateway


class FakeGateway:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "succeed",
        hang_seconds: float = 60,
        quiet: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.quiet = quiet
        self._lock = threading.Lock()
        self._charges: dict[str, dict[str, Any]] = {}  # idempotency key -> charge
        self._posts: dict[str, int] = {}  # idempotency key -> POST /charges received
        self._calls = 0  # gateway API calls received (not control calls)
        self._release = threading.Event()  # set: hanging requests answer now
        self.server = _Server((host, port), _Handler)
        self.server.gateway = self
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGateway:
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- control -------------------------------------------------------------------------------------------

    def set_mode(self, mode: str, hang_seconds: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        with self._lock:
            self.mode = mode
            if hang_seconds is not None:
                self.hang_seconds = hang_seconds
            self._release.set()  # whoever hangs now answers according to the new mode
            self._release = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self._charges.clear()
            self._posts.clear()
            self._calls = 0

    def charges(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(charge) for charge in self._charges.values()]

    def charge_count(self, status: str | None = None) -> int:
        return sum(1 for charge in self.charges() if status is None or charge["status"] == status)

    def posts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._posts)

    def calls(self) -> int:
        with self._lock:
            return self._calls

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "mode": self.mode,
                "hang_seconds": self.hang_seconds,
                "charges": len(self._charges),
                "succeeded": sum(c["status"] == "succeeded" for c in self._charges.values()),
                "declined": sum(c["status"] == "declined" for c in self._charges.values()),
                "calls": self._calls,
            }

    # ---- the gateway API -----------------------------------------------------------------------------------

    def _availability(self) -> tuple[str, threading.Event, float]:
        with self._lock:
            self._calls += 1
            return self.mode, self._release, self.hang_seconds

    def charge(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = {name: body.get(name) for name in ("amount", "currency", "reference")}
        with self._lock:
            self._posts[key] = self._posts.get(key, 0) + 1
            existing = self._charges.get(key)
            if existing is not None:
                if {name: existing[name] for name in request} != request:
                    return 409, {"error": "idempotency_key_reused", "message": "This key was used for another charge."}
                return 200, dict(existing)
            declined = self.mode == "decline"
            charge = {
                "id": f"ch_{uuid.uuid4().hex[:16]}",
                "status": "declined" if declined else "succeeded",
                "message": DECLINE_MESSAGE if declined else "",
                **request,
                "idempotency_key": key,
                "created_at": time.time(),
            }
            self._charges[key] = charge
            return 201, dict(charge)

    def lookup(self, key: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            charge = self._charges.get(key)
        if charge is None:
            return 404, {"error": "not_found", "message": "No charge with this idempotency key."}
        return 200, dict(charge)


def _valid_charge_body(body: Any) -> str | None:
    """An error message, or None when the body is a valid charge request."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    amount = body.get("amount")
    try:
        if not isinstance(amount, str) or float(amount) <= 0:
            return "amount must be a positive decimal string"
    except ValueError:
        return "amount must be a positive decimal string"
    if not isinstance(body.get("currency"), str) or len(body["currency"]) != 3:
        return "currency must be a 3-letter code"
    if not isinstance(body.get("reference"), str) or not body["reference"]:
        return "reference is required"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.gateway.quiet:
            sys.stderr.write(f"fake_gateway: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def _gateway_down(self) -> bool:
        """Apply the fail/hang modes; True when the request was answered (or dropped) that way."""
        gateway = self.server.gateway
        mode, release, hang_seconds = gateway._availability()
        if mode == "hang":
            release.wait(hang_seconds)
            mode = gateway.mode
            if mode == "hang":
                self._send(503, {"error": "unavailable", "message": "Hung, then gave up."})
                return True
        if mode == "fail":
            self._send(500, {"error": "internal_error", "message": "The fake gateway is failing (mode fail)."})
            return True
        return False

    def do_GET(self) -> None:
        gateway = self.server.gateway
        if self.path == "/_control":
            self._send(200, gateway.state())
        elif self.path == "/_charges":
            self._send(200, {"charges": gateway.charges(), "posts": gateway.posts()})
        elif self.path.startswith("/charges/"):
            if not self._gateway_down():
                self._send(*gateway.lookup(unquote(self.path.removeprefix("/charges/"))))
        else:
            self._send(404, {"error": "not_found", "message": "No such route."})

    def do_POST(self) -> None:
        gateway = self.server.gateway
        body = self._body()
        if self.path == "/_control":
            mode = body.get("mode") if isinstance(body, dict) else None
            if mode not in MODES:
                self._send(400, {"error": "bad_mode", "message": f"mode must be one of {', '.join(MODES)}"})
                return
            gateway.set_mode(mode, body.get("hang_seconds"))
            self._send(200, gateway.state())
        elif self.path == "/_reset":
            gateway.reset()
            self._send(200, gateway.state())
        elif self.path == "/charges":
            if self._gateway_down():
                return
            key = self.headers.get("Idempotency-Key", "").strip()
            problem = "the Idempotency-Key header is required" if not key else _valid_charge_body(body)
            if problem:
                self._send(400, {"error": "bad_request", "message": problem})
                return
            self._send(*gateway.charge(key, body))
        else:
            self._send(404, {"error": "not_found", "message": "No such route."})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.fake_gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="succeed")
    parser.add_argument("--hang-seconds", type=float, default=60)
    parser.add_argument("--pid-file", type=Path, help="write the process id here (removed on exit)")
    parser.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    args = parser.parse_args(argv)
    try:
        gateway = FakeGateway(args.host, args.port, args.mode, args.hang_seconds, quiet=args.quiet)
    except OSError as exc:
        print(f"fake_gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=gateway.server.shutdown, daemon=True).start()  # shutdown() from another thread

    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started in the background: Ctrl-C is not for us
        signal.signal(signal.SIGINT, stop)
    print(f"fake_gateway: serving on {gateway.url} (mode {gateway.mode})", file=sys.stderr, flush=True)
    try:
        gateway.server.serve_forever()
    finally:
        gateway._release.set()
        gateway.server.server_close()
        if args.pid_file:
            with suppress(FileNotFoundError):
                args.pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
