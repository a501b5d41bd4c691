"""Rate limits while Redis is killed, restarted, hung and resumed under load; X-Forwarded-For spoofing.

Real processes: a throwaway devstack (port base 62600) and gunicorn with 2 workers (4 threads each) counting in
that stack's Redis. Clients are told apart by the address the test, playing the one trusted proxy
(``TRUSTED_PROXY_COUNT=1``), puts last in ``X-Forwarded-For``. Each phase sends one client's log-ins on fresh
connections (spread over both workers) while a few threads keep reading products:

- Redis up: counting is shared by the workers, so exactly ``LOGIN_LIMIT`` log-ins pass.
- Redis killed or hung: no 5xx, no read slower than 3 s (a hung Redis costs one 250 ms timeout per
  process, once), each worker's circuit opens exactly once, and the limit holds from memory at each worker's
  share, ``ceil(LOGIN_LIMIT / 2)``: between one and two shares pass, never all of them.
- Redis back: each worker's probe closes its circuit (logged) and counting is shared and exact again.

And the global limit's leases across the workers: one client's reads spread over both workers get at most the
limit, and at most the README's stated error fewer.
"""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from resilience.ratelimit.counting import LEASE_SHARE, lease_size
from tests.system.conftest import Gunicorn
from tests.system.dbfailover import (
    PASSWORD,
    REQUEST_TIMEOUT,
    Deployment,
    GetLoad,
    assert_no_server_errors,
    full_log,
    log_records,
    poll,
    product_ids,
)

pytestmark = pytest.mark.system

PORT_BASE = 62600
LOGIN_LIMIT = 6
WORKERS = 2
SHARE = -(-LOGIN_LIMIT // WORKERS)  # ceil
ATTEMPTS = LOGIN_LIMIT + 4
API_LIMIT = 100_000
# Seconds, generous on a shared 2-core machine: one Redis timeout is 0.25 s, while redis-py's default retries
# (10, with backoff) make one call against a hung Redis take about 6 s. A log-in that reaches the password check
# is slow by design (PBKDF2, ~0.6 s alone, several seconds with the load here), so it gets its own bound.
SLOWEST = 3.0
SLOWEST_PASSWORD_CHECK = 10.0


@dataclass(frozen=True)
class Attempt:
    status: int
    elapsed: float
    limit: str | None
    code: str | None


def an_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{max(1, raw[2])}"


def login_attempts(server: Gunicorn, client_ip: str, count: int = ATTEMPTS, spoof: bool = True) -> list[Attempt]:
    """``count`` wrong-password log-ins for one client, each on a fresh connection (any worker may serve it).
    The client also puts a made-up address of its own first in X-Forwarded-For: it must not matter."""
    attempts = []
    for _ in range(count):
        forwarded = f"{an_ip()}, {client_ip}" if spoof else client_ip
        started = time.monotonic()
        response = requests.post(
            f"{server.url}/api/auth/token/",
            json={"username": f"nobody-{client_ip}", "password": PASSWORD},
            headers={"X-Forwarded-For": forwarded},
            timeout=REQUEST_TIMEOUT,
        )
        code = response.json()["error"]["code"] if response.status_code >= 400 else None
        attempts.append(
            Attempt(response.status_code, time.monotonic() - started, response.headers.get("RateLimit-Limit"), code)
        )
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1, response.headers
            assert response.headers["RateLimit-Remaining"] == "0"
    return attempts


def allowed(attempts: list[Attempt]) -> int:
    return sum(a.status == 401 for a in attempts)


def assert_sane(attempts: list[Attempt]) -> None:
    """Only 401 (wrong password) or 429 rate_limited; nothing slow."""
    assert all(a.status == 401 or (a.status == 429 and a.code == "rate_limited") for a in attempts), attempts
    assert all(a.elapsed < SLOWEST for a in attempts if a.status == 429), attempts
    assert all(a.elapsed < SLOWEST_PASSWORD_CHECK for a in attempts), attempts


def assert_shared_counting(attempts: list[Attempt]) -> None:
    """Redis mode: both workers count in one place, so exactly the limit passes."""
    assert_sane(attempts)
    assert allowed(attempts) == LOGIN_LIMIT, attempts
    assert {a.limit for a in attempts} == {str(LOGIN_LIMIT)}, attempts


def assert_memory_counting(attempts: list[Attempt]) -> None:
    """Memory mode: each worker allows its share; a client spread over both gets between one and two shares."""
    assert_sane(attempts)
    assert SHARE <= allowed(attempts) <= SHARE * WORKERS, attempts
    assert {a.limit for a in attempts} == {str(SHARE)}, attempts
    assert sum(a.status == 429 for a in attempts) >= ATTEMPTS - SHARE * WORKERS


def events(server: Gunicorn, event: str) -> list[str]:
    """The pids that logged ``event``, in order."""
    return re.findall(rf"{event}: .*? pid (\d+)", full_log(server))


def wait_events(server: Gunicorn, event: str, count: int, timeout: float = 15) -> None:
    poll(lambda: len(events(server, event)) >= count, timeout=timeout, interval=0.1)


def serve(deployment: Deployment, name: str, trusted_proxies: int) -> Gunicorn:
    return deployment.serve(
        name,
        RATELIMIT_ENABLED="true",
        # A day's window: a fixed window restarts at a (per-client) boundary, which a phase must not straddle.
        RATELIMIT_LOGIN=f"{LOGIN_LIMIT}/d",
        RATELIMIT_LOGIN_USER="1000/m",
        RATELIMIT_API=f"{API_LIMIT}/m",  # the read load comes from one address; the login limit is under test
        TRUSTED_PROXY_COUNT=str(trusted_proxies),
        WEB_CONCURRENCY=str(WORKERS),
    )


def test_redis_killed_and_hung_under_load_limits_hold_from_memory(tmp_path) -> None:
    with Deployment("sys-ratelimit", PORT_BASE, tmp_path) as deployment:
        _killed_and_hung(deployment)


def _killed_and_hung(deployment: Deployment) -> None:
    server = serve(deployment, "ratelimit", trusted_proxies=1)
    ids = product_ids(server.url)
    assert_shared_counting(login_attempts(server, an_ip()))

    with GetLoad(server.url, ids, threads=4) as load:
        time.sleep(1)
        # ---- kill -9: connections refused at once ----
        deployment.stack.kill("redis")
        killed_at = time.monotonic()
        wait_events(server, "cache_redis_down", WORKERS)  # the read load reaches both workers
        assert_memory_counting(login_attempts(server, an_ip()))
        deployment.stack.start("redis")
        wait_events(server, "cache_redis_up", WORKERS)
        assert_shared_counting(login_attempts(server, an_ip()))

        # ---- SIGSTOP: connections accepted, never answered (each process pays one socket timeout) ----
        deployment.stack.hang("redis")
        hung_at = time.monotonic()
        wait_events(server, "cache_redis_down", 2 * WORKERS)
        assert_memory_counting(login_attempts(server, an_ip()))
        deployment.stack.resume("redis")
        resumed_at = time.monotonic()
        wait_events(server, "cache_redis_up", 2 * WORKERS)
        assert_shared_counting(login_attempts(server, an_ip()))

    load.assert_all_ok(min_requests=100)
    assert max(s.elapsed for s in load.samples) < SLOWEST, load.summary()
    outage = load.between(killed_at, hung_at) + load.between(hung_at, resumed_at)
    assert len(outage) >= 20, load.summary(outage)
    # One circuit trip and one recovery per worker per outage: no flapping, no second timeout.
    down, up = events(server, "cache_redis_down"), events(server, "cache_redis_up")
    assert len(down) == len(up) == 2 * WORKERS, (down, up)
    assert len(set(down[:WORKERS])) == len(set(down[WORKERS:])) == WORKERS, down
    assert_no_server_errors(server)
    print(f"reads during the outages: {load.summary(outage)}; all reads: {load.summary()}")


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored_and_the_operator_can_force_memory(tmp_path) -> None:
    with Deployment("sys-ratelimit", PORT_BASE, tmp_path) as deployment:
        _spoofing(deployment)


def _spoofing(deployment: Deployment) -> None:
    server = serve(deployment, "ratelimit-no-proxy", trusted_proxies=0)
    # Every attempt claims another address; all of them come from 127.0.0.1, which is what counts.
    attempts = []
    for _ in range(ATTEMPTS):
        response = requests.post(
            f"{server.url}/api/auth/token/",
            json={"username": "nobody", "password": PASSWORD},
            headers={"X-Forwarded-For": an_ip()},
            timeout=REQUEST_TIMEOUT,
        )
        attempts.append(response.status_code)
    assert attempts == [401] * LOGIN_LIMIT + [429] * (ATTEMPTS - LOGIN_LIMIT), attempts

    # The operator switch: every worker counts in memory (its share of each limit) within about a second.
    set_at = deployment.control_set(**{"ratelimit.force_memory": True})
    _, waited = poll(lambda: api_limits(server) == {str(API_LIMIT // WORKERS)}, timeout=10, interval=0.2)
    assert time.monotonic() - set_at < 4, waited
    assert len(set(events(server, "cache_forced_memory"))) == WORKERS
    deployment.control_set(**{"ratelimit.force_memory": False})
    poll(lambda: api_limits(server) == {str(API_LIMIT)}, timeout=10, interval=0.2)
    assert_no_server_errors(server)


def api_limits(server: Gunicorn, count: int = 12) -> set[str | None]:
    """RateLimit-Limit of ``count`` product reads on fresh connections (both workers answer some)."""
    return {
        requests.get(f"{server.url}/api/products/?page_size=1", timeout=REQUEST_TIMEOUT).headers.get("RateLimit-Limit")
        for _ in range(count)
    }


LEASED_LIMIT = 400  # a lease of 10 for 2 workers: up to 18 fewer than the limit, never more


def test_the_global_limit_holds_across_workers_within_the_stated_error(tmp_path) -> None:
    with Deployment("sys-ratelimit", PORT_BASE, tmp_path) as deployment:
        server = deployment.serve(
            "ratelimit-leases",
            RATELIMIT_ENABLED="true",
            RATELIMIT_API=f"{LEASED_LIMIT}/d",
            TRUSTED_PROXY_COUNT="1",
            WEB_CONCURRENCY=str(WORKERS),
        )
        size = lease_size(LEASED_LIMIT, WORKERS)
        assert size == 10
        for _client in range(2):
            statuses = _reads_of_one_client(server, an_ip(), LEASED_LIMIT + 60)
            allowed = statuses.count(200)
            assert set(statuses) == {200, 429}, statuses
            assert LEASED_LIMIT - WORKERS * (size - 1) <= allowed <= LEASED_LIMIT, allowed
            assert LEASED_LIMIT - allowed <= LEASED_LIMIT * LEASE_SHARE
        served_by = {r.get("process") for r in log_records(server) if r.get("path") == "/api/products/"}
        assert len(served_by) == WORKERS, served_by  # the reads were spread over both workers
        assert_no_server_errors(server)


def _reads_of_one_client(server: Gunicorn, client_ip: str, count: int) -> list[int]:
    """``count`` product reads of one client from 8 threads, each request on a fresh connection (either worker)."""

    def read(_: int) -> int:
        response = requests.get(
            f"{server.url}/api/products/?page_size=1", headers={"X-Forwarded-For": client_ip}, timeout=REQUEST_TIMEOUT
        )
        if response.status_code == 429:
            assert response.json()["error"]["detail"]["scope"] == "api"
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(read, range(count)))
