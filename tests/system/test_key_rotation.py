"""The database key ring end to end: rotate, retire, revoke, EdDSA + JWKS and "log out everywhere", over HTTP.

One gunicorn (2 workers) against the session's stack; ``manage.py rotate_jwt_key`` runs as a separate process
with the same environment, as an operator would run it. Every claim "in every worker" is checked on keep-alive
connections pinned to each worker (the worker holding a connection is found through ``/proc``), several per
worker and used from concurrent threads, so each probe is ~20 requests of which both workers serve half.

Lifetimes are short so that a PREVIOUS key may be retired 13 s after a rotation (10 s refresh + 1 s leeway + the
ring's 2 s propagation margin).
The ring rows this module creates are deleted at the end: the other system tests expect ``JWT_SECRET`` to sign.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.system.conftest import ROOT, Gunicorn

pytestmark = pytest.mark.system

ACCESS_LIFETIME, REFRESH_LIFETIME, LEEWAY = 8, 10, 1
RETIRE_DELAY = max(ACCESS_LIFETIME, REFRESH_LIFETIME) + LEEWAY + 2  # seconds from rotation until --retire is allowed
JWKS_MAX_AGE = 1
PASSWORD = "correct horse battery staple"
PROPAGATION_LIMIT = 2.0  # a revocation (or logout) is obeyed by every worker within this, from the command's exit
SIGNING_LIMIT = 3.0  # new logins carry a new ACTIVE key within this
CONNECTIONS_PER_WORKER = 2
REQUESTS_PER_CONNECTION = 5  # 2 workers x 2 connections x 5 = 20 requests per probe
CLEANUP = (
    "from resilience.auth.models import SigningKey; print(SigningKey.objects.all().delete()[0], 'ring row(s) deleted')"
)


# ---- the gunicorn workers, each on connections of its own -------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:  # field 4, after "pid (comm) state"
            found.append(int(entry.name))
    return sorted(found)


def socket_inode(server_port: int, client_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{server_port:04X}") and fields[2].endswith(f":{client_port:04X}"):
            return fields[9]
    return None


def socket_owner(pids: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    token: str | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    pid: int
    call: Call
    status: int
    data: Any
    headers: dict[str, str]

    @property
    def reason(self) -> str | None:
        try:
            return self.data["error"]["detail"]["reason"]
        except (KeyError, TypeError):
            return None


class Workers:
    """Keep-alive connections pinned to each worker of one gunicorn; re-pinned before gunicorn's keep-alive ends."""

    IDLE_LIMIT = 3.0  # gunicorn.conf.py keepalive is 5 s

    def __init__(self, server: Gunicorn) -> None:
        self.server = server
        self.pids = children(server.process.pid)
        assert len(self.pids) == 2, f"gunicorn should run 2 workers, found {self.pids}"
        self.connections: list[tuple[int, http.client.HTTPConnection]] = []
        self.used_at = -1e9

    def close(self) -> None:
        for _, connection in self.connections:
            connection.close()
        self.connections = []

    def _pin(self) -> None:
        self.close()
        deadline = time.monotonic() + 15  # a worker still booting accepts nothing yet
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=15)
            connection.request("GET", "/health/live")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            inode = socket_inode(self.server.port, connection.sock.getsockname()[1])
            pid = socket_owner(self.pids, inode) if inode else None
            if pid is not None and sum(owner == pid for owner, _ in self.connections) < CONNECTIONS_PER_WORKER:
                self.connections.append((pid, connection))
                if len(self.connections) == CONNECTIONS_PER_WORKER * len(self.pids):
                    return
            else:
                connection.close()
        self.close()
        raise AssertionError(f"could not reach both workers {self.pids} within 15 s:\n{self.server.log_text()}")

    def probe(self, *calls: Call, repeat: int = REQUESTS_PER_CONNECTION, one_per_worker: bool = False) -> list[Reply]:
        """Every pinned connection sends ``calls`` ``repeat`` times, all connections at once; every reply.

        ``one_per_worker``: one connection of each worker only (log-ins hash a password: CPU-heavy).
        """
        if not self.connections or time.monotonic() - self.used_at > self.IDLE_LIMIT:
            self._pin()
        connections = self.connections
        if one_per_worker:
            connections = list({pid: connection for pid, connection in reversed(connections)}.items())

        def run(pid: int, connection: http.client.HTTPConnection) -> list[Reply]:
            replies = []
            for _ in range(repeat):
                for call in calls:
                    headers = {"Content-Type": "application/json"}
                    if call.token:
                        headers["Authorization"] = f"Bearer {call.token}"
                    body = json.dumps(call.body) if call.body is not None else None
                    connection.request(call.method, call.path, body=body, headers=headers)
                    response = connection.getresponse()
                    raw = response.read()
                    data = json.loads(raw) if raw else None
                    replies.append(Reply(pid, call, response.status, data, dict(response.getheaders())))
            return replies

        with ThreadPoolExecutor(len(connections)) as pool:
            batches = list(pool.map(lambda pinned: run(*pinned), connections))
        self.used_at = time.monotonic()
        replies = [reply for batch in batches for reply in batch]
        assert {reply.pid for reply in replies} == set(self.pids)  # both workers answered
        return replies


@contextmanager
def traffic(server: Gunicorn, token: str) -> Iterator[list[Reply]]:
    """Both workers verify ``token`` without pause meanwhile: their rings are fresh when a change commits.

    That is the worst case for propagation (a worker re-reads only once its copy is RING_REFRESH_SECONDS old);
    with idle workers the first request after a change would re-read at once and hide a slow refresh.
    """
    stop, failures, replies = threading.Event(), [], []
    workers = Workers(server)

    def run() -> None:
        try:
            while not stop.wait(0.2):  # each worker verifies a token every 0.2 s: well within the 1 s refresh
                replies.extend(workers.probe(me(token), repeat=1, one_per_worker=True))
        except (AssertionError, OSError, http.client.HTTPException, ValueError) as exc:  # reported, not lost
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield replies
    finally:
        stop.set()
        thread.join(20)
        workers.close()
    assert not failures, failures


def until(check: Callable[[], tuple[bool, Any]], since: float, timeout: float) -> tuple[float, Any]:
    """Repeat ``check`` until it says done; (seconds from ``since`` to that moment, its last value)."""
    while True:
        done, value = check()
        elapsed = time.monotonic() - since
        if done:
            return elapsed, value
        if elapsed > timeout:
            raise AssertionError(f"not reached within {timeout} s; last: {value!r}")
        time.sleep(0.05)


def summary(replies: list[Reply]) -> dict[tuple[int, int, str | None], int]:
    counts: dict[tuple[int, int, str | None], int] = {}
    for reply in replies:
        key = (reply.pid, reply.status, reply.reason)
        counts[key] = counts.get(key, 0) + 1
    return counts


def all_refused(replies: list[Reply], *reasons: str) -> bool:
    return all(reply.status == 401 and reply.reason in reasons for reply in replies)


# ---- the operator's command and the API --------------------------------------------------------------------


def rotate_jwt_key(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``manage.py rotate_jwt_key``; the result and the monotonic instant it exited."""
    proc = subprocess.run(
        [sys.executable, "manage.py", "rotate_jwt_key", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, time.monotonic()


def rotate_ok(env: dict[str, str], *args: str) -> tuple[str, float]:
    proc, exited = rotate_jwt_key(env, *args)
    assert proc.returncode == 0, f"rotate_jwt_key {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout, exited


def new_kid(stdout: str) -> str:
    match = re.search(r"\b(db-[0-9a-f]{16})\b", stdout)
    assert match, stdout
    return match.group(1)


def header(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def me(token: str) -> Call:
    return Call("GET", "/api/auth/me/", token=token)


def refresh_call(refresh: str) -> Call:
    return Call("POST", "/api/auth/token/refresh/", body={"refresh": refresh})


@dataclass
class Account:
    url: str
    username: str

    def login(self) -> dict[str, str]:
        response = requests.post(
            f"{self.url}/api/auth/token/", json={"username": self.username, "password": PASSWORD}, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()

    def login_call(self) -> Call:
        return Call("POST", "/api/auth/token/", body={"username": self.username, "password": PASSWORD})


def register(url: str) -> Account:
    name = f"kr{uuid.uuid4().hex[:10]}"
    response = requests.post(
        f"{url}/api/auth/register/",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return Account(url, name)


@dataclass
class Ring:
    server: Gunicorn
    env: dict[str, str]
    workers: Workers


@pytest.fixture(scope="module")
def ring(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    env = {key: value for key, value in stack_env.items() if key != "JWT_SECRET_PREV"}
    env.update(
        {
            "JWT_SECRET": secrets.token_urlsafe(48),  # a kid no earlier test has a ring row for
            "JWT_EXPIRES_IN": f"{ACCESS_LIFETIME}s",
            "JWT_REFRESH_EXPIRES_IN": f"{REFRESH_LIFETIME}s",
            "JWT_LEEWAY": f"{LEEWAY}s",
            "JWT_JWKS_MAX_AGE": f"{JWKS_MAX_AGE}s",
            "RATELIMIT_ENABLED": "false",  # every request comes from one loopback address
        }
    )
    server = workers = None
    try:
        server = Gunicorn(env, tmp_path_factory.mktemp("keyrot") / "gunicorn.log")
        workers = Workers(server)
        yield Ring(server, env, workers)
    finally:
        try:
            if workers is not None:
                workers.close()
            if server is not None:
                server.stop()
        finally:
            # Test cleanup, not a key operation: the ring goes back to "no rows", so JWT_SECRET signs again for
            # the later system tests (test_env_key_rotation starts servers with secrets of its own).
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", CLEANUP], cwd=ROOT, env=env, check=True, timeout=60
            )


# ---- the stories -----------------------------------------------------------------------------------------------


def test_rotation_keeps_everyone_logged_in_until_the_previous_key_retires(ring: Ring) -> None:
    account = register(ring.server.url)
    old = account.login()
    k0 = header(old["access"])["kid"]

    rotation_started = datetime.now().astimezone()
    with traffic(ring.server, old["access"]) as during:
        stdout, rotated = rotate_ok(ring.env)
    rotation_ended = datetime.now().astimezone()
    k1 = new_kid(stdout)
    assert k1 != k0

    # The old access token keeps working in both workers, during the rotation and after: the previous key verifies.
    assert {r.pid for r in during} == set(ring.workers.pids), summary(during)
    assert all(r.status == 200 for r in during), summary(during)
    replies = ring.workers.probe(me(old["access"]))
    assert all(r.status == 200 and r.data["username"] == account.username for r in replies), summary(replies)

    # New logins in both workers carry the new kid once each worker re-read the ring.
    def logins_signed_with_k1() -> tuple[bool, list[str]]:
        kids = [
            header(r.data["access"])["kid"]
            for r in ring.workers.probe(account.login_call(), repeat=1, one_per_worker=True)
        ]
        return all(kid == k1 for kid in kids), kids

    took, _ = until(logins_signed_with_k1, rotated, SIGNING_LIMIT + 5)
    print(f"rotation: both workers sign with {k1} {took:.2f} s after rotate_jwt_key exited")
    assert took <= SIGNING_LIMIT, took

    # The old refresh token still refreshes, into tokens of the new key.
    refreshed = requests.post(
        f"{ring.server.url}/api/auth/token/refresh/", json={"refresh": old["refresh"]}, timeout=10
    )
    assert refreshed.status_code == 200, refreshed.text
    assert header(refreshed.json()["access"])["kid"] == k1
    assert header(refreshed.json()["refresh"])["kid"] == k1

    # Retiring the previous key is refused while its tokens may be unexpired; the message says from when.
    refused, _ = rotate_jwt_key(ring.env, "--retire", k0)
    assert refused.returncode != 0, refused.stdout
    match = re.search(r"can be retired from (\S+) on", refused.stderr)
    assert match, refused.stderr
    retire_at = datetime.fromisoformat(match.group(1))  # printed to the second, rounded down
    delay = timedelta(seconds=RETIRE_DELAY)
    assert rotation_started + delay - timedelta(seconds=1) <= retire_at <= rotation_ended + delay, (
        rotation_started,
        retire_at,
    )

    time.sleep(max(0.0, (retire_at + timedelta(seconds=1.2) - datetime.now().astimezone()).total_seconds()))
    stdout, _ = rotate_ok(ring.env, "--retire", k0)
    assert f"retired {k0}" in stdout
    listing, _ = rotate_ok(ring.env, "--list")
    assert re.search(rf"^{k0} .* retired ", listing, re.MULTILINE), listing
    assert re.search(rf"^{k1} .* active .*\(signs\)$", listing, re.MULTILINE), listing

    replies = ring.workers.probe(me(old["access"]))
    assert all_refused(replies, "key_retired"), summary(replies)
    fresh = account.login()  # the refreshed pair has expired by now: the new key is checked with a new login
    assert header(fresh["access"])["kid"] == k1
    replies = ring.workers.probe(me(fresh["access"]), repeat=2)
    assert all(r.status == 200 for r in replies), summary(replies)


def test_revocation_is_obeyed_by_every_worker_within_two_seconds(ring: Ring) -> None:
    account = register(ring.server.url)
    first = account.login()
    k1 = header(first["access"])["kid"]

    stdout, rotated = rotate_ok(ring.env)
    k2 = new_kid(stdout)
    assert k2 != k1

    def login_with(kid: str) -> Callable[[], tuple[bool, list[dict[str, str]]]]:
        def check() -> tuple[bool, list[dict[str, str]]]:
            pairs = [r.data for r in ring.workers.probe(account.login_call(), repeat=1, one_per_worker=True)]
            return all(header(pair["access"])["kid"] == kid for pair in pairs), pairs

        return check

    took, pairs = until(login_with(k2), rotated, SIGNING_LIMIT + 5)
    assert took <= SIGNING_LIMIT, took
    second = pairs[0]
    replies = ring.workers.probe(me(first["access"]), me(second["access"]), repeat=3)
    assert all(r.status == 200 for r in replies), summary(replies)  # PREVIOUS and ACTIVE both verify

    # Revoke the PREVIOUS key: its tokens are refused everywhere within 2 s of the command's exit.
    with traffic(ring.server, first["access"]):
        stdout, revoked = rotate_ok(ring.env, "--revoke", k1)
    assert f"revoked {k1}" in stdout

    def k1_refused() -> tuple[bool, Any]:
        replies = ring.workers.probe(me(first["access"]))
        return all_refused(replies, "key_revoked"), summary(replies)

    took, _ = until(k1_refused, revoked, PROPAGATION_LIMIT + 5)
    print(f"revocation of PREVIOUS {k1}: all 20 requests 401 key_revoked {took:.2f} s after the command exited")
    assert took <= PROPAGATION_LIMIT, took
    refused = requests.post(
        f"{ring.server.url}/api/auth/token/refresh/", json={"refresh": first["refresh"]}, timeout=10
    )
    assert refused.status_code == 401 and refused.json()["error"]["detail"] == {"reason": "key_revoked"}, refused.text
    replies = ring.workers.probe(me(second["access"]), repeat=2)
    assert all(r.status == 200 for r in replies), summary(replies)  # the ACTIVE key is untouched

    # Revoke the ACTIVE key: a new one signs, its tokens are refused everywhere.
    with traffic(ring.server, second["access"]):
        stdout, revoked = rotate_ok(ring.env, "--revoke", k2)
    assert f"revoked {k2}" in stdout

    def k2_refused() -> tuple[bool, Any]:
        replies = ring.workers.probe(me(second["access"]))
        return all_refused(replies, "key_revoked"), summary(replies)

    took, _ = until(k2_refused, revoked, PROPAGATION_LIMIT + 5)
    print(f"revocation of ACTIVE {k2}: all 20 requests 401 key_revoked {took:.2f} s after the command exited")
    assert took <= PROPAGATION_LIMIT, took

    def logins_with_a_new_key() -> tuple[bool, list[dict[str, str]]]:
        pairs = [r.data for r in ring.workers.probe(account.login_call(), repeat=1, one_per_worker=True)]
        kids = {header(pair["access"])["kid"] for pair in pairs}
        return len(kids) == 1 and not kids & {k1, k2}, pairs

    took, pairs = until(logins_with_a_new_key, revoked, SIGNING_LIMIT + 5)
    assert took <= SIGNING_LIMIT, took
    k3 = header(pairs[0]["access"])["kid"]
    assert re.fullmatch(r"db-[0-9a-f]{16}", k3), k3
    replies = ring.workers.probe(*(me(pair["access"]) for pair in pairs), repeat=2)
    assert all(r.status == 200 and r.data["username"] == account.username for r in replies), summary(replies)


def test_eddsa_key_is_published_before_it_signs_and_verifies_against_the_jwks(ring: Ring) -> None:
    account = register(ring.server.url)
    jwks_call = Call("GET", "/.well-known/jwks.json")

    with traffic(ring.server, account.login()["access"]):
        stdout, staged = rotate_ok(ring.env, "--stage", "--algorithm", "EdDSA")
    kid = new_kid(stdout)
    assert "NEXT" in stdout

    def published() -> tuple[bool, list[Reply]]:
        replies = ring.workers.probe(jwks_call, repeat=1)
        return all(reply.status == 200 and kid in {k["kid"] for k in reply.data["keys"]} for reply in replies), replies

    took, replies = until(published, staged, PROPAGATION_LIMIT + 5)
    print(f"EdDSA key {kid} in every worker's JWKS {took:.2f} s after --stage exited")
    assert took <= PROPAGATION_LIMIT, took
    for reply in replies:
        assert reply.headers["Cache-Control"] == f"public, max-age={JWKS_MAX_AGE}"
        (jwk,) = [k for k in reply.data["keys"] if k["kid"] == kid]
        assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
        }
        assert "d" not in jwk and jwk["x"]
        assert all(k["kty"] == "OKP" and "d" not in k and "k" not in k for k in reply.data["keys"])  # no HS256 key
    # Staged only: logins are still signed with the HS256 ACTIVE key.
    pair = account.login()
    assert header(pair["access"])["alg"] == "HS256" and header(pair["access"])["kid"] != kid

    time.sleep(max(0.0, staged + JWKS_MAX_AGE + 0.3 - time.monotonic()))  # verifiers' JWKS caches know it now
    with traffic(ring.server, account.login()["access"]):
        stdout, rotated = rotate_ok(ring.env, "--algorithm", "EdDSA")
    assert new_kid(stdout) == kid and "EdDSA" in stdout

    def logins_signed_with_eddsa() -> tuple[bool, list[dict[str, str]]]:
        pairs = [r.data for r in ring.workers.probe(account.login_call(), repeat=1, one_per_worker=True)]
        return all(header(p["access"]) == {"alg": "EdDSA", "kid": kid, "typ": "JWT"} for p in pairs), pairs

    took, pairs = until(logins_signed_with_eddsa, rotated, SIGNING_LIMIT + 5)
    print(f"EdDSA: both workers sign with {kid} {took:.2f} s after the rotation exited")
    assert took <= SIGNING_LIMIT, took

    document = requests.get(f"{ring.server.url}/.well-known/jwks.json", timeout=10).json()
    (jwk,) = [k for k in document["keys"] if k["kid"] == kid]
    public = jwt.PyJWK(jwk)
    for pair in pairs:
        claims = jwt.decode(pair["access"], public.key, algorithms=["EdDSA"], audience="bulwark-api", issuer="bulwark")
        assert claims["token_type"] == "access"
        assert jwt.decode(pair["refresh"], public.key, algorithms=["EdDSA"], audience="bulwark-api")["token_type"] == (
            "refresh"
        )
    with pytest.raises(jwt.InvalidSignatureError):  # the check above can fail: another key does not verify
        other = jwt.PyJWK.from_dict({**jwk, "x": jwt.utils.base64url_encode(bytes(32)).decode()})
        jwt.decode(pairs[0]["access"], other.key, algorithms=["EdDSA"], audience="bulwark-api")

    replies = ring.workers.probe(*(me(pair["access"]) for pair in pairs), repeat=2)
    assert all(r.status == 200 and r.data["username"] == account.username for r in replies), summary(replies)


def test_logout_everywhere_refuses_every_token_of_the_user_in_every_worker(ring: Ring) -> None:
    account = register(ring.server.url)
    bystander = register(ring.server.url)
    first, second, other = account.login(), account.login(), bystander.login()
    replies = ring.workers.probe(me(first["access"]), me(second["access"]), repeat=2)
    assert all(r.status == 200 for r in replies), summary(replies)

    response = requests.post(
        f"{ring.server.url}/api/auth/logout/all/", headers={"Authorization": f"Bearer {first['access']}"}, timeout=10
    )
    assert response.status_code == 204, response.text
    logged_out = time.monotonic()

    seen: list[Reply] = []

    def everything_refused() -> tuple[bool, Any]:
        replies = ring.workers.probe(
            me(first["access"]),
            me(second["access"]),
            refresh_call(first["refresh"]),
            refresh_call(second["refresh"]),
            repeat=2,
        )
        seen.extend(replies)
        access = [r for r in replies if r.call.path == "/api/auth/me/"]
        refresh = [r for r in replies if r.call.path != "/api/auth/me/"]
        done = all_refused(access, "logged_out") and all_refused(refresh, "blacklisted", "logged_out")
        return done, summary(replies)

    took, _ = until(everything_refused, logged_out, PROPAGATION_LIMIT + 5)
    print(f"logout everywhere: both tokens and both refresh tokens refused in both workers after {took:.2f} s")
    assert took <= PROPAGATION_LIMIT, took
    # No refresh got through meanwhile (one that did would have blacklisted its token: "blacklisted" afterwards too).
    assert all(r.status == 401 for r in seen if r.call.path != "/api/auth/me/"), summary(seen)

    replies = ring.workers.probe(me(other["access"]), repeat=2)
    assert all(r.status == 200 for r in replies), summary(replies)  # nobody else is logged out
    fresh = account.login()
    replies = ring.workers.probe(me(fresh["access"]), repeat=2)
    assert all(r.status == 200 and r.data["username"] == account.username for r in replies), summary(replies)
