"""deploy/haproxy: the committed configuration is the renderer's, haproxy accepts it, and a real haproxy run with
the rendered configuration routes, retries and answers errors as documented.

The members here are fake (a small HTTP server per member on loopback, each recording what reached it), so the
tests can make a member close without answering, shed with 503 or be absent, and count exactly how often a
request reached a member: the retry policy is shown by what was sent, not inferred from what came back. The real
pools are in tests/system/test_serving_pools.py. haproxy comes with Debian's ``haproxy`` package (``make test``
installs it); without it these tests fail, never skip, since the configuration would go unchecked.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from resilience.serving.classes import HEADER, ROUTES, TRAFFIC_CLASSES, traffic_class_for
from resilience.serving.haproxy import Layout, Member, default_serving, reference_layout, render
from tests.helpers import poll
from tests.system.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        pytest.fail(
            "haproxy is not installed: the HAProxy configuration cannot be checked. Install Debian's `haproxy` "
            "package (`apt-get install haproxy`; `make test` does it through scripts/bootstrap.sh)."
        )
    return found


def test_committed_configuration_is_the_rendered_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(reference_layout(), default_serving()), (
        "run: python -m resilience.serving.haproxy render --defaults > deploy/haproxy/haproxy.cfg"
    )
    cli = subprocess.run(
        [sys.executable, "-m", "resilience.serving.haproxy", "render", "--defaults"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert cli.stdout == COMMITTED.read_text(encoding="utf-8")


def test_haproxy_accepts_the_committed_configuration() -> None:
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(COMMITTED)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr, result.stdout + result.stderr


# ---- a real haproxy in front of fake members ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str  # as the member's server decoded it
    request_id: str
    forwarded_for: str


@dataclass
class FakeMember:
    """A pool member: answers health checks 200; other requests per ``mode``: ok, close (no answer), 503."""

    traffic_class: str
    name: str
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        member = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = unquote(self.path.split("?", 1)[0])
                if "X-Request-ID" not in self.headers:  # HAProxy's health check: every proxied request has one
                    return self._answer(200, {"status": "pass"})
                member.seen.append(
                    Seen(
                        self.command,
                        path,
                        self.headers.get("X-Request-ID", ""),
                        self.headers.get("X-Forwarded-For", ""),
                    )
                )
                if member.mode == "close":
                    self.close_connection = True  # read the request, send nothing: what a crash looks like
                    return None
                if member.mode == "503":
                    return self._answer(503, {"error": {"code": "overloaded"}}, served_by=member.name)
                return self._answer(200, {"member": member.name}, served_by=member.name)

            def _answer(self, status: int, body: dict, served_by: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header(HEADER, traffic_class_for(unquote(self.path.split("?", 1)[0])))  # as Bulwark does
                if served_by:
                    self.send_header("X-Served-By", served_by)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_OPTIONS = do_PUT = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a health check that hangs up before the body is read: not an error here

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proxy:
    """haproxy with the rendered configuration for ``members`` (class -> fake members) and ``extra`` (members
    that are listed but never started: a dead port)."""

    def __init__(self, tmp: Path, members: dict[str, list[FakeMember]], dead: dict[str, list[Member]]) -> None:
        pools = {
            name: tuple(Member(m.name, "127.0.0.1", m.port) for m in members.get(name, [])) + tuple(dead.get(name, ()))
            for name in TRAFFIC_CLASSES
            if name != "ops"
        }
        self.port, self.stats = free_port(), free_port()
        layout = Layout(
            pools=pools, bind=f"127.0.0.1:{self.port}", stats_bind=f"127.0.0.1:{self.stats}", stats_socket=None
        )
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(render(layout, default_serving()))
        self.log_path = tmp / "haproxy.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        live = {m.name for group in members.values() for m in group}
        try:
            poll(lambda: self._up(live), 15, interval=0.1)
        except BaseException:
            self.stop()
            raise

    def _up(self, names: set[str]) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.stats, timeout=2)
            connection.request("GET", "/stats;csv")
            rows = connection.getresponse().read().decode().splitlines()
        except OSError:
            return False
        up = {row.split(",")[1] for row in rows[1:] if row.count(",") > 17 and row.split(",")[17].startswith("UP")}
        return names <= up

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on its own connection, the path sent exactly as given (no client-side normalising)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Type", "application/json")
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def request_raw_headers(self, lines: list[str]) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.putrequest("GET", "/api/products/")
            for line in lines:
                name, value = line.split(": ", 1)
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Proxy, dict[str, list[FakeMember]]]]:
    members = {
        "catalog": [FakeMember("catalog", "catalog-1"), FakeMember("catalog", "catalog-2")],
        "auth": [FakeMember("auth", "auth-1")],
        "checkout": [FakeMember("checkout", "checkout-1"), FakeMember("checkout", "checkout-2")],
    }
    proxy = Proxy(tmp_path, members, dead={})
    yield proxy, members
    proxy.stop()
    for group in members.values():
        for member in group:
            member.stop()


def seen(members: dict[str, list[FakeMember]]) -> list[tuple[str, Seen]]:
    return [(member.traffic_class, s) for group in members.values() for member in group for s in member.seen]


def reset(members: dict[str, list[FakeMember]], mode: str = "ok") -> None:
    for group in members.values():
        for member in group:
            member.seen.clear()
            member.mode = mode


def routing_paths() -> list[str]:
    paths = ["/", "/nope", "/api/", "/api/authx", "/api/ordersx", "/healthz", "/adminx", "/api/products"]
    for route in ROUTES:
        paths += list(route.exact)
        paths += [f"{prefix}x/1" for prefix in route.prefixes]
    paths += ["/%61pi/auth/token/", "/api/%6frders/", "/%68ealth/ready", "/api/cart%2Fitems/", "/admin%2F"]
    return paths


def test_every_path_reaches_the_pool_the_table_names(fleet) -> None:
    proxy, members = fleet
    for path in routing_paths():
        reset(members)
        expected = traffic_class_for(unquote(path))
        status, headers, _ = proxy.request("GET", path)
        assert headers["x-traffic-class"] == expected, path
        if expected == "admin":  # no admin members here: the proxy's own 503, naming the class
            assert status == 503, (path, status)
            assert not seen(members), path
            continue
        assert status == 200, (path, status)
        reached = seen(members)
        assert [s.path for _, s in reached] == [unquote(path)], path
        if expected != "ops":  # ops: any member of any pool (there is no ops pool here)
            assert reached[0][0] == expected, path


def test_request_ids_and_forwarded_for(fleet) -> None:
    proxy, members = fleet
    status, _, _ = proxy.request("GET", "/api/products/", {"X-Request-ID": "client-id.1:2"})
    assert status == 200
    [(_, first)] = seen(members)
    assert first.request_id == "client-id.1:2"
    assert first.forwarded_for == "127.0.0.1"  # option forwardfor: what TRUSTED_PROXY_COUNT=1 reads
    for offered in ({"X-Request-ID": "not sane!"}, {"X-Request-ID": "x" * 129}, {}):
        reset(members)
        proxy.request("GET", "/api/products/", offered)
        [(_, later)] = seen(members)
        assert HEX_ID.match(later.request_id), (offered, later.request_id)
    reset(members)
    proxy.request_raw_headers(["X-Request-ID: a", "X-Request-ID: b"])  # two: the server would see "a,b"
    [(_, two)] = seen(members)
    assert HEX_ID.match(two.request_id), two.request_id


def test_proxy_errors_are_json_with_class_and_request_id(fleet) -> None:
    proxy, members = fleet
    status, headers, body = proxy.request("GET", "/admin/", {"X-Request-ID": "mine-1"})
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["x-traffic-class"] == "admin"
    assert headers["x-request-id"] == "mine-1"
    assert headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["code"] == "dependency_unavailable"
    assert error["request_id"] == "mine-1"
    assert error["detail"]["traffic_class"] == "admin"
    assert "admin" in error["message"]
    _, headers, body = proxy.request("GET", "/admin/login/")
    generated = json.loads(body)["error"]["request_id"]
    assert HEX_ID.match(generated) and headers["x-request-id"] == generated

    reset(members, mode="close")  # every catalog member answers nothing: the proxy's 502
    status, headers, body = proxy.request("GET", "/api/products/", {"X-Request-ID": "mine-2"})
    assert status == 502, body
    assert json.loads(body)["error"]["code"] == "dependency_unavailable"
    assert headers["x-traffic-class"] == "catalog" and headers["x-request-id"] == "mine-2"


def test_reads_are_retried_on_another_member_writes_never_after_sending(fleet) -> None:
    proxy, members = fleet
    catalog = members["catalog"]

    # One member dies under a read (closes without an answer): the read is answered by the other one.
    for _ in range(6):
        reset(members)
        catalog[0].mode = "close"
        status, headers, _ = proxy.request("GET", "/api/products/1/")
        assert status == 200 and headers["x-served-by"] == "catalog-2"
        assert len(catalog[1].seen) == 1 and len(catalog[0].seen) <= 1

    # Every member fails a read: 1 attempt + 2 retries, each on another member than the last.
    reset(members, mode="close")
    status, _, _ = proxy.request("GET", "/api/products/1/")
    assert status == 502
    assert len(catalog[0].seen) + len(catalog[1].seen) == 3
    assert catalog[0].seen and catalog[1].seen

    # A POST that reached a member which then answered nothing is never sent again.
    reset(members, mode="close")
    status, _, _ = proxy.request("POST", "/api/orders/", {"Idempotency-Key": "k1"}, body=b"{}")
    assert status == 502
    assert len([s for _, s in seen(members) if s.method == "POST"]) == 1
    for method in ("PUT", "DELETE"):
        reset(members, mode="close")
        proxy.request(method, "/api/cart/items/1/", body=b"{}")
        assert len(seen(members)) == 1, method

    # 503 overloaded from a member: a read goes to another member; a write is answered with that 503 as it is.
    reset(members)
    catalog[0].mode = "503"
    for _ in range(6):
        status, headers, _ = proxy.request("GET", "/api/products/2/")
        assert status == 200 and headers["x-served-by"] == "catalog-2"
    checkout = members["checkout"]
    reset(members)
    checkout[0].mode = checkout[1].mode = "503"
    status, headers, body = proxy.request("POST", "/api/orders/", {"Idempotency-Key": "k2"}, body=b"{}")
    assert status == 503 and json.loads(body) == {"error": {"code": "overloaded"}}
    assert len(seen(members)) == 1
    # Every member overloaded for a read: the member's own 503 reaches the client after the retries.
    reset(members, mode="503")
    status, headers, body = proxy.request("GET", "/api/cart/")
    assert status == 503
    assert len(seen(members)) == 3
    assert json.loads(body) == {"error": {"code": "overloaded"}}  # the last member's answer, not the proxy's


def test_a_write_to_a_dead_member_goes_to_a_live_one(tmp_path: Path) -> None:
    """conn-failure: the request could not be sent, so even a POST may go to another member."""
    live = FakeMember("checkout", "checkout-2")
    dead = Member("checkout-1", "127.0.0.1", free_port())  # nothing listens there
    proxy = Proxy(tmp_path, {"checkout": [live]}, dead={"checkout": [dead]})
    try:
        for n in range(6):  # before and after the check marks the dead one DOWN
            status, headers, _ = proxy.request("POST", "/api/orders/", {"Idempotency-Key": f"k{n}"}, body=b"{}")
            assert status == 200 and headers["x-served-by"] == "checkout-2"
        assert len(live.seen) == 6
    finally:
        proxy.stop()
        live.stop()
