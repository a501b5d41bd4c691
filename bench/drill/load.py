"""The drill's load: a few shoppers in paced closed loops on loopback, every request recorded.

Why threads with keep-alive ``requests`` sessions (and not asyncio or a load tool): the load is small and bounded
(a few shoppers, one step every ``interval`` seconds each: tens of requests a second), so a thread per shopper
costs nothing measurable, each thread keeps one keep-alive connection like a browser would, and a blocking client
measures exactly what one customer waits for (connect, server, body read) without an event loop's scheduling in the
figures. The same shape as :mod:`bench.ha.load` (whose session and pacing this follows), plus what the drill needs:
the ``kid`` of the token each request carried (so a 401 for a token issued before a rotation is found), the 401's
``detail.reason``, and running totals for the progress line.

A :class:`Shopper` picks each step by weight: browse (``GET /api/products/?page_size=20``, ``GET
/api/products/<id>/``), read its cart, add to it, check out (``POST /api/orders/`` with a fresh
``Idempotency-Key``; a cart add first when its cart is empty), refresh its token (rotating) and now and then log
in again (a PBKDF2 check, about 0.6 s of one core: rare, and at most ``max_logins`` times per shopper, since the
per-username log-in limit is kept low for the brute-force check). A refused token is renewed (refresh, else
log-in) before the next step.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

TIMEOUT = 10.0
KIND_CLASS = {
    "list": "read",
    "detail": "read",
    "cart": "read",
    "cart_add": "write",
    "checkout": "write",
    "refresh": "auth",
    "login": "auth",
    "register": "auth",
    "brute": "brute",
    "probe": "probe",
    "race": "race",
}
WEIGHTS = {"list": 22, "detail": 30, "cart": 12, "cart_add": 16, "checkout": 14, "refresh": 5, "login": 1}
OK_STATUS = {"cart_add": 201, "checkout": 201, "register": 201, "race": 201}


@dataclass
class Record:
    kind: str
    klass: str
    wall: float  # time.time() when sent
    start: float  # time.monotonic() when sent, minus the run's epoch
    latency: float  # seconds (the time it took to fail, for a request that got no answer)
    status: int  # 0: no answer
    code: str = ""
    reason: str = ""  # a 401's detail.reason
    error: str = ""
    user: str = ""
    kid: str = ""  # the kid of the bearer token sent
    order_id: int | None = None
    order_status: str = ""
    key: str = ""  # the checkout's Idempotency-Key
    stale: bool = False  # X-Data-Stale: true
    rid: str = ""  # the response's X-Request-ID (its bulwark.request log record names it)

    @property
    def ok(self) -> bool:
        return self.status == OK_STATUS.get(self.kind, 200)


def token_kid(token: str) -> str:
    """The ``kid`` in a JWT's header (read, not verified)."""
    try:
        head = token.split(".", 1)[0]
        return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))).get("kid", ""))
    except (ValueError, IndexError):
        return ""


def session() -> requests.Session:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=1))
    s.headers.update({"Accept": "application/json"})
    return s


def _envelope(response: requests.Response) -> tuple[str, str, Any]:
    try:
        body = response.json()
    except ValueError:
        return ("" if response.status_code < 400 else "not_json"), "", None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", "", body
    detail = error.get("detail")
    reason = str(detail.get("reason", "")) if isinstance(detail, dict) else ""
    return str(error.get("code", "")), reason, body


class Recorder:
    """The run's clock, the shared list every client appends to, and running totals for the progress line."""

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self.records: list[Record] = []
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.epoch

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)
            if record.klass in ("read", "write", "auth") and not record.ok:
                self.errors[str(record.status or record.error)] += 1

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return len(self.records), sum(self.errors.values())

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)


def send(
    http: requests.Session,
    recorder: Recorder,
    kind: str,
    method: str,
    url: str,
    *,
    user: str = "",
    token: str = "",
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    key: str = "",
    timeout: float = TIMEOUT,
) -> tuple[Record, Any]:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    rec = Record(kind, KIND_CLASS[kind], time.time(), time.monotonic() - recorder.epoch, 0.0, 0)
    rec.user, rec.key, rec.kid = user, key, token_kid(token) if token else ""
    started = time.monotonic()
    body: Any = None
    try:
        response = http.request(method, url, json=json_body, headers=headers, timeout=(2.0, timeout))
        _ = response.content  # the body read is part of the latency
    except requests.Timeout:
        rec.error = "timeout"
    except requests.RequestException as exc:
        rec.error = f"conn: {type(exc).__name__}"
    else:
        rec.status = response.status_code
        rec.code, rec.reason, body = _envelope(response)
        rec.stale = response.headers.get("X-Data-Stale") == "true"
        rec.rid = response.headers.get("X-Request-ID", "")
        if kind in ("checkout", "race") and response.status_code == 201 and isinstance(body, dict):
            rec.order_id, rec.order_status = body.get("id"), str(body.get("status", ""))
    rec.latency = time.monotonic() - started
    recorder.add(rec)
    return rec, body


class Client:
    """One account's keep-alive session and tokens (shoppers, buyers, the rotation probe)."""

    def __init__(self, base_url: str, username: str, password: str, recorder: Recorder) -> None:
        self.base = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.recorder = recorder
        self.http = session()
        self.access = ""
        self.refresh_token = ""

    def call(self, kind: str, method: str, path: str, *, authed: bool = True, **kw: Any) -> tuple[Record, Any]:
        token = self.access if authed else ""
        rec, body = send(
            self.http, self.recorder, kind, method, f"{self.base}{path}", user=self.username, token=token, **kw
        )
        if authed and rec.status == 401:
            self.access = ""  # renewed before the next step
        return rec, body

    def login(self, kind: str = "login") -> bool:
        creds = {"username": self.username, "password": self.password}
        rec, body = self.call(kind, "POST", "/api/auth/token/", authed=False, json_body=creds)
        if rec.status == 200 and isinstance(body, dict):
            self.access, self.refresh_token = body["access"], body["refresh"]
        return rec.status == 200

    def refresh(self, kind: str = "refresh") -> bool:
        if not self.refresh_token:
            return self.login()
        rec, body = self.call(
            kind, "POST", "/api/auth/token/refresh/", authed=False, json_body={"refresh": self.refresh_token}
        )
        if rec.status == 200 and isinstance(body, dict):
            self.access, self.refresh_token = body["access"], body["refresh"]
        elif rec.status == 401:
            self.refresh_token = self.access = ""  # refused: log in next time
        return rec.status == 200


class Shopper(threading.Thread):
    """One customer in a paced closed loop (see the module docstring)."""

    def __init__(
        self, client: Client, product_ids: list[int], *, interval: float, seed: int, max_logins: int = 3
    ) -> None:
        super().__init__(name=f"shopper-{client.username}", daemon=True)
        self.client = client
        self.product_ids = product_ids
        self.interval = interval
        self.rng = random.Random(seed)
        self.max_logins = max_logins
        self.logins = 0
        self.cart_items = 0
        self._stop_event = threading.Event()
        self._kinds = list(WEIGHTS)
        self._weights = [WEIGHTS[k] for k in self._kinds]

    def cart_add(self) -> bool:
        body = {"product_id": self.rng.choice(self.product_ids), "quantity": 1}
        rec, _ = self.client.call("cart_add", "POST", "/api/cart/items/", json_body=body)
        if rec.ok:
            self.cart_items += 1
        return rec.ok

    def checkout(self) -> None:
        if self.cart_items == 0 and not self.cart_add():
            return
        key = uuid.uuid4().hex
        rec, _ = self.client.call("checkout", "POST", "/api/orders/", headers={"Idempotency-Key": key}, key=key)
        if rec.ok or rec.code == "cart_empty":
            self.cart_items = 0

    def step(self) -> None:
        c = self.client
        if not c.access:
            c.refresh()
            return
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind == "login" and self.logins >= self.max_logins:
            kind = "refresh"
        if kind == "list":
            c.call("list", "GET", "/api/products/?page_size=20", authed=False)
        elif kind == "detail":
            c.call("detail", "GET", f"/api/products/{self.rng.choice(self.product_ids)}/", authed=False)
        elif kind == "cart":
            c.call("cart", "GET", "/api/cart/")
        elif kind == "cart_add":
            self.cart_add()
        elif kind == "checkout":
            self.checkout()
        elif kind == "refresh":
            c.refresh()
        elif kind == "login":
            self.logins += 1
            c.login()

    def run(self) -> None:
        next_at = time.monotonic() + self.rng.uniform(0, self.interval)
        while not self._stop_event.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop_event.wait(delay):
                break
            next_at = max(next_at + self.interval, time.monotonic())  # no catch-up burst after a slow step
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a client bug must not end the drill's load silently
                rec = Record("list", "read", time.time(), self.client.recorder.now(), 0.0, 0, error=f"client: {exc!r}")
                self.client.recorder.add(rec)

    def stop(self) -> None:
        self._stop_event.set()


def register(base_url: str, recorder: Recorder, username: str, password: str) -> None:
    body = {"username": username, "email": f"{username}@bench.invalid", "password": password}
    rec, answer = send(
        session(), recorder, "register", "POST", f"{base_url}/api/auth/register/", json_body=body, timeout=30
    )
    if not rec.ok:
        raise RuntimeError(f"registering {username} failed: {rec.status} {rec.code or rec.error} {answer}")


class Load:
    """The shoppers, started and stopped together."""

    def __init__(self, shoppers: list[Shopper]) -> None:
        self.shoppers = shoppers

    def start(self) -> None:
        for shopper in self.shoppers:
            shopper.start()

    def stop(self, wait: float = TIMEOUT + 5) -> None:
        for shopper in self.shoppers:
            shopper.stop()
        deadline = time.monotonic() + wait
        for shopper in self.shoppers:
            shopper.join(max(0.1, deadline - time.monotonic()))
