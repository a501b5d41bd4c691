"""Shared machinery for the database failover system tests (``test_db_failover_*.py``).

Every test that breaks nodes gets its own throwaway devstack (``Deployment``: up, migrate, seed; always torn
down, hung nodes resumed first) and its own gunicorn (2 workers) with that stack's environment. Load comes
from a few threads on loopback, bounded in count and time; every request's status and elapsed time are kept
so the tests can assert correctness (no failed GET, no hang, writes refused or accepted) with wide margins.

Port bases live above the kernel's ephemeral port range (32768-60999 here), so a client socket can never
squat on a stack's port: 62400, 62410, ... one per test (bench/failover defaults to 61000).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devstack import DevstackError, Stack
from tests.helpers import poll
from tests.system.conftest import ROOT, Gunicorn

CONNECT_TIMEOUT = 2  # DB_CONNECT_TIMEOUT given to every server here
REQUEST_TIMEOUT = 15  # client-side: a request that takes longer counts as hung
PASSWORD = "correct horse battery staple"
REPLICA_ALIAS = "replica_1"


# The load of these tests (up to 16 clients at once on two workers) never meets a bulkhead or a budget unless the
# test is about them (test_serving_*.py set their own): what they measure is failover, not shedding. Headroom over
# 16: a bulkhead place is held until the server has written the response out, and a client on fresh connections
# can have its next request accepted by another thread just before the last one gives its place back.
SERVING_OUT_OF_THE_WAY = {
    "WEB_THREADS": "25",
    **{f"SERVING_LIMIT_{name}": "24" for name in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN", "OPS")},
    **{f"SERVING_BUDGET_{name}": "60s" for name in ("CATALOG", "AUTH", "CHECKOUT", "ADMIN", "OPS")},
}


def app_env(stack_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The environment for manage.py and gunicorn against ``stack_env`` (secrets from scripts/test.sh)."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(stack_env)
    env.update(
        {
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(64),
            "JWT_SECRET": os.environ.get("JWT_SECRET") or secrets.token_urlsafe(48),
            "DJANGO_ENV": "development",
            "DOTENV_FILE": "none",
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "RATELIMIT_ENABLED": "false",  # the load comes from one loopback address
            **SERVING_OUT_OF_THE_WAY,
        }
    )
    env.update(overrides)
    return env


def run_manage(*args: str, env: dict[str, str], timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Deployment:
    """A throwaway stack (migrated, seeded, replica caught up) and the gunicorn servers started against it."""

    def __init__(self, name: str, port_base: int, log_dir: Path) -> None:
        self.notes: list[str] = []
        self.stack = Stack(name=name, port_base=port_base, echo=self.notes.append)
        self.log_dir = log_dir
        self.servers: list[Gunicorn] = []
        self.stack_env: dict[str, str] = {}
        self.env: dict[str, str] = {}

    def __enter__(self) -> Deployment:
        try:
            self.stack.down()  # leftovers of an interrupted earlier run
            self.stack_env = self.stack.up()
            self.env = app_env(self.stack_env)
            run_manage("migrate", "--noinput", env=self.env)
            run_manage("seed_demo", "-v", "0", env=self.env)
            self.wait_replica_caught_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            for server in self.servers:
                print(f"--- {server.log_path} (tail) ---\n{server.log_text()}")  # shown by pytest on failure
            print("--- devstack notes ---\n" + "\n".join(self.notes))
        self.close()

    def close(self) -> None:
        try:
            for server in self.servers:
                with suppress(Exception):
                    server.stop()
        finally:
            for node in ("primary", "replica", "redis"):
                with suppress(DevstackError, OSError):
                    self.stack.resume(node)  # a hung node must run again, or stopping it hangs
            self.stack.down()

    def serve(self, name: str = "gunicorn", **overrides: str) -> Gunicorn:
        server = Gunicorn(app_env(self.stack_env, **overrides), self.log_dir / f"{name}.log")
        self.servers.append(server)
        return server

    # ---- the database, seen from outside the app -------------------------------------------------------------

    def wait_replica_caught_up(self, timeout: float = 20) -> None:
        # The insert position, not pg_current_wal_lsn() (the write position): the stack commits asynchronously, so
        # a commit can sit in the WAL buffers past the write position; a kill then loses it while the replica
        # looks caught up.
        target = self.stack.psql("primary", "SELECT pg_current_wal_insert_lsn()")

        def replayed() -> bool:
            return self.stack.psql("replica", f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t"

        poll(replayed, timeout, interval=0.1)

    def replica_clock(self) -> str:
        return self.stack.psql("replica", "SELECT now()")

    def replica_queries_since(self, since: str, table: str) -> int:
        """App sessions on the replica whose latest query touched ``table`` and started at/after ``since``."""
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bulwark' AND usename = 'bulwark' "  # noqa: S608
            f"AND backend_type = 'client backend' AND query_start >= '{since}'::timestamptz "
            f"AND query ILIKE '%{table}%'"
        )
        return int(self.stack.psql("replica", sql))

    def replica_serves_reads(self, server: Gunicorn, product_ids: list[int], requests_count: int = 20) -> int:
        """Send cookie-less product reads on fresh connections; how many replica sessions served some of them."""
        since = self.replica_clock()
        for product_id in itertools.islice(itertools.cycle(product_ids), requests_count):
            response = requests.get(f"{server.url}/api/products/{product_id}/", timeout=REQUEST_TIMEOUT)
            assert response.status_code == 200, response.text
        return self.replica_queries_since(since, "shop_product")

    def superuser_create(self, username: str, password: str) -> None:
        """A superuser made as an operator would (``createsuperuser --noinput``)."""
        run_manage(
            "createsuperuser",
            "--noinput",
            "--username",
            username,
            "--email",
            f"{username}@example.com",
            env={**self.env, "DJANGO_SUPERUSER_PASSWORD": password},
        )

    def control_set(self, **switches: bool) -> float:
        """Set operator switches through the service (stored, audited); returns the monotonic time it returned."""
        calls = "; ".join(
            f"control_set(key={key!r}, enabled={enabled!r}, actor=None, reason='system test')"
            for key, enabled in switches.items()
        )
        run_manage("shell", "-c", f"from resilience.controls.services import control_set; {calls}", env=self.env)
        return time.monotonic()


def csrf_token(session: requests.Session, url: str) -> str:
    """GET ``url`` (an admin form) with ``session``: the CSRF token of its form (the cookie stays in the session)."""
    page = session.get(url, timeout=REQUEST_TIMEOUT)
    assert page.status_code == 200, page.text[:500]
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def full_log(server: Gunicorn) -> str:
    server.log.flush()
    return server.log_path.read_text(errors="replace")


def log_records(server: Gunicorn) -> list[dict[str, Any]]:
    """The server's JSON log records (one object a line; other lines, e.g. a crash's raw stderr, left out)."""
    records = []
    for line in full_log(server).splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                records.append(json.loads(line))
    return records


def assert_no_server_errors(*servers: Gunicorn) -> None:
    """No 500 in the access log and no traceback anywhere in the servers' logs."""
    for server in servers:
        text = full_log(server)
        five_hundreds = [line for line in text.splitlines() if re.search(r'HTTP/[\d.]+\\?" 500 ', line)]
        assert not five_hundreds, "\n".join(five_hundreds[:10])
        assert "Traceback" not in text, text[text.index("Traceback") - 2000 : text.index("Traceback") + 3000]


# ---- the API, as a client uses it --------------------------------------------------------------------------


@dataclass
class Customer:
    username: str
    access: str = ""
    refresh: str = ""
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


def register(base_url: str, prefix: str, session: requests.Session | None = None) -> Customer:
    customer = Customer(f"{prefix}{uuid.uuid4().hex[:10]}", session=session or requests.Session())
    response = customer.session.post(
        f"{base_url}/api/auth/register/",
        json={"username": customer.username, "email": f"{customer.username}@example.com", "password": PASSWORD},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return customer


def login(base_url: str, customer: Customer) -> requests.Response:
    response = customer.session.post(
        f"{base_url}/api/auth/token/",
        json={"username": customer.username, "password": PASSWORD},
        timeout=REQUEST_TIMEOUT,
    )
    if response.status_code == 200:
        customer.access, customer.refresh = response.json()["access"], response.json()["refresh"]
    return response


def customer_logged_in(base_url: str, prefix: str) -> Customer:
    customer = register(base_url, prefix)
    response = login(base_url, customer)
    assert response.status_code == 200, response.text
    return customer


def product_ids(base_url: str) -> list[int]:
    response = requests.get(f"{base_url}/api/products/", params={"page_size": 100}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    ids = [product["id"] for product in response.json()["results"]]
    assert len(ids) >= 20, ids
    return ids


@dataclass(frozen=True)
class Timed:
    response: requests.Response
    elapsed: float

    @property
    def status(self) -> int:
        return self.response.status_code

    def code(self) -> str | None:
        try:
            return self.response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.status} in {self.elapsed:.2f}s: {self.response.text[:300]}"


def add_to_cart(base_url: str, customer: Customer, product_id: int, *, fresh_connection: bool = True) -> Timed:
    """POST /api/cart/items/ (quantity 1); by default on a fresh connection, without the customer's cookies."""
    client: Any = requests if fresh_connection else customer.session
    started = time.monotonic()
    response = client.post(
        f"{base_url}/api/cart/items/",
        json={"product_id": product_id, "quantity": 1},
        headers=customer.auth,
        timeout=REQUEST_TIMEOUT,
    )
    return Timed(response, time.monotonic() - started)


def assert_read_only_mode(write: Timed, *, max_seconds: float) -> None:
    assert write.status == 503 and write.code() == "read_only_mode", write.describe()
    assert int(write.response.headers["Retry-After"]) > 0, write.response.headers
    assert write.elapsed < max_seconds, write.describe()


# ---- bounded read load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() when the request was sent
    path: str
    status: int  # 0: no response (connection error or client timeout)
    elapsed: float
    error: str = ""


class GetLoad:
    """``threads`` clients, each looping GET /api/products/?page_size=5 and /api/products/<id>/ on fresh
    connections until stopped (at most ``max_seconds``). Use as a context manager."""

    def __init__(
        self, base_url: str, ids: list[int], threads: int = 4, max_seconds: float = 90, pause: float = 0.02
    ) -> None:
        self.base_url = base_url
        self.ids = ids
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        self.max_seconds = max_seconds
        self.pause = pause
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> GetLoad:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)

    def _run(self, n: int) -> None:
        ids = itertools.cycle(self.ids[n::2] or self.ids)
        paths = itertools.cycle(["/api/products/?page_size=5", None])
        deadline = self.started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            path = next(paths) or f"/api/products/{next(ids)}/"
            started = time.monotonic()
            try:
                response = requests.get(self.base_url + path, timeout=REQUEST_TIMEOUT)
                sample = Sample(started, path, response.status_code, time.monotonic() - started)
                if response.status_code != 200:
                    sample = Sample(started, path, response.status_code, sample.elapsed, response.text[:300])
            except requests.RequestException as exc:
                sample = Sample(started, path, 0, time.monotonic() - started, repr(exc)[:300])
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(self.pause)

    def between(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.started < end]

    def failures(self) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.status != 200]

    def summary(self, samples: Iterable[Sample] | None = None) -> str:
        chosen = list(self.samples if samples is None else samples)
        if not chosen:
            return "no requests"
        elapsed = [s.elapsed for s in chosen]
        return (
            f"{len(chosen)} GETs, {sum(s.status == 200 for s in chosen)} x 200, "
            f"median {statistics.median(elapsed):.3f}s, max {max(elapsed):.2f}s"
        )

    def assert_all_ok(self, min_requests: int) -> None:
        failures = self.failures()
        assert not failures, f"{len(failures)} failed GETs of {len(self.samples)}: {failures[:5]}"
        assert len(self.samples) >= min_requests, self.summary()
