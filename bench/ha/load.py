"""The drill's load: a few shoppers in closed loops through HAProxy's ``app`` frontend, every request recorded.

Each :class:`Shopper` is one thread with its own keep-alive session (``requests``, no retries, a 10 s timeout)
that paces itself (one step every ``interval`` seconds, whatever the answers take, never two at once) and picks
each step by weight: browse (``GET /api/products/?page_size=20``, ``GET /api/products/<id>/``), read its cart
(``GET /api/cart/``), add to it (``POST /api/cart/items/``), check out (``POST /api/orders/`` with a fresh
``Idempotency-Key``; a cart add first when its cart is empty), refresh its token (``POST
/api/auth/token/refresh/``, rotating) and now and then log in again (``POST /api/auth/token/``: a PBKDF2 check,
about 0.6 s of one core, hence rare). An expired or refused token is renewed (refresh, else log-in) before the
next step.

Every request becomes a :class:`Record`: wall-clock and monotonic start (relative to the run's epoch), kind,
class (``read``, ``write``, ``auth``), status (0 = no answer: ``error`` says why), the error envelope's
``code``, latency (body read), the answering host when a header names it (none does: the run reads it from the
hosts' logs by the ``X-Request-Id``), the order id of a ``201`` order and
the ``Idempotency-Key`` of every checkout (so an order whose outcome the client does not know can be looked up).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

TIMEOUT = 10.0
HOST_HEADERS = ("X-Served-By", "X-Backend-Server", "X-Server")  # none of them is set today; recorded if one is
KIND_CLASS = {
    "list": "read",
    "detail": "read",
    "cart": "read",
    "cart_add": "write",
    "checkout": "write",
    "refresh": "auth",
    "login": "auth",
    "register": "auth",
}
# Step weights (a checkout step is a cart add first when the cart is empty: about one write in four is an order).
WEIGHTS = {"list": 22, "detail": 30, "cart": 12, "cart_add": 16, "checkout": 14, "refresh": 5, "login": 1}
OK_STATUS = {"cart_add": 201, "checkout": 201, "register": 201}


@dataclass
class Record:
    kind: str
    klass: str
    wall: float  # time.time() when sent
    start: float  # time.monotonic() when sent, minus the run's epoch
    latency: float  # seconds (the time it took to fail, for a request that got no answer)
    status: int  # 0: no answer
    code: str = ""
    error: str = ""
    user: str = ""
    host: str = ""
    order_id: int | None = None
    key: str = ""  # the checkout's Idempotency-Key
    rid: str = ""  # the response's X-Request-Id (the app hosts' logs name it: which host answered)

    @property
    def ok(self) -> bool:
        return self.status == OK_STATUS.get(self.kind, 200)


def session() -> requests.Session:
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=1)
    s.mount("http://", adapter)
    s.headers.update({"Accept": "application/json"})
    return s


def _code(response: requests.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return ("" if response.status_code < 400 else "not_json"), None
    error = body.get("error") if isinstance(body, dict) else None
    return (error.get("code", "") if isinstance(error, dict) else ""), body


class Recorder:
    """The run's clock and the shared list every client appends to."""

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.epoch

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

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
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    key: str = "",
    timeout: float = TIMEOUT,
) -> tuple[Record, Any]:
    wall, started = time.time(), time.monotonic()
    try:
        response = http.request(method, url, json=json_body, headers=headers, timeout=(2.0, timeout))
        _ = response.content  # the body read is part of the latency (requests reads it eagerly anyway)
    except requests.Timeout:
        rec = Record(kind, KIND_CLASS[kind], wall, started - recorder.epoch, time.monotonic() - started, 0)
        rec.error, rec.user, rec.key = "timeout", user, key
        recorder.add(rec)
        return rec, None
    except requests.RequestException as exc:
        rec = Record(kind, KIND_CLASS[kind], wall, started - recorder.epoch, time.monotonic() - started, 0)
        rec.error, rec.user, rec.key = f"conn: {type(exc).__name__}", user, key
        recorder.add(rec)
        return rec, None
    latency = time.monotonic() - started
    code, body = _code(response)
    host = next((response.headers[h] for h in HOST_HEADERS if h in response.headers), "")
    rec = Record(kind, KIND_CLASS[kind], wall, started - recorder.epoch, latency, response.status_code, code)
    rec.user, rec.host, rec.key = user, host, key
    rec.rid = response.headers.get("X-Request-Id", "")
    if kind == "checkout" and response.status_code == 201 and isinstance(body, dict):
        rec.order_id = body.get("id")
    recorder.add(rec)
    return rec, body


class Shopper(threading.Thread):
    """One customer in a paced closed loop (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        product_ids: list[int],
        recorder: Recorder,
        *,
        interval: float,
        seed: int,
    ) -> None:
        super().__init__(name=f"shopper-{username}", daemon=True)
        self.base = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.product_ids = product_ids
        self.recorder = recorder
        self.interval = interval
        self.rng = random.Random(seed)
        self.http = session()
        self.access = ""
        self.refresh_token = ""
        self.cart_items = 0  # what the client believes is in its cart
        self._stop_event = threading.Event()
        self._kinds = list(WEIGHTS)
        self._weights = [WEIGHTS[k] for k in self._kinds]

    # ---- auth -----------------------------------------------------------------------------------------------

    def login(self) -> bool:
        rec, body = send(
            self.http,
            self.recorder,
            "login",
            "POST",
            f"{self.base}/api/auth/token/",
            user=self.username,
            json_body={"username": self.username, "password": self.password},
        )
        if rec.ok and isinstance(body, dict):
            self.access, self.refresh_token = body["access"], body["refresh"]
        return rec.ok

    def refresh(self) -> bool:
        if not self.refresh_token:
            return self.login()
        rec, body = send(
            self.http,
            self.recorder,
            "refresh",
            "POST",
            f"{self.base}/api/auth/token/refresh/",
            user=self.username,
            json_body={"refresh": self.refresh_token},
        )
        if rec.ok and isinstance(body, dict):
            self.access, self.refresh_token = body["access"], body["refresh"]
        elif rec.status == 401:
            self.refresh_token = ""  # rotated by a refresh whose answer was lost, or refused: log in next time
            self.access = ""
        return rec.ok

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    # ---- the steps ------------------------------------------------------------------------------------------

    def _authed(self, kind: str, method: str, path: str, **kw: Any) -> tuple[Record, Any]:
        headers = {**self.auth, **kw.pop("headers", {})}
        rec, body = send(
            self.http, self.recorder, kind, method, f"{self.base}{path}", user=self.username, headers=headers, **kw
        )
        if rec.status == 401:
            self.access = ""  # renewed before the next step
        return rec, body

    def cart_add(self) -> Record:
        body = {"product_id": self.rng.choice(self.product_ids), "quantity": 1}
        rec, _ = self._authed("cart_add", "POST", "/api/cart/items/", json_body=body)
        if rec.ok:
            self.cart_items += 1
        return rec

    def checkout(self) -> None:
        if self.cart_items == 0 and not self.cart_add().ok:
            return
        key = uuid.uuid4().hex
        rec, _ = self._authed("checkout", "POST", "/api/orders/", headers={"Idempotency-Key": key}, key=key)
        if rec.ok or rec.code == "cart_empty":
            self.cart_items = 0

    def step(self) -> None:
        if not self.access:
            self.refresh()  # a log-in instead when there is no refresh token (or it was refused)
            return
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind == "list":
            send(self.http, self.recorder, "list", "GET", f"{self.base}/api/products/?page_size=20", user=self.username)
        elif kind == "detail":
            pid = self.rng.choice(self.product_ids)
            send(self.http, self.recorder, "detail", "GET", f"{self.base}/api/products/{pid}/", user=self.username)
        elif kind == "cart":
            self._authed("cart", "GET", "/api/cart/")
        elif kind == "cart_add":
            self.cart_add()
        elif kind == "checkout":
            self.checkout()
        elif kind == "refresh":
            self.refresh()
        elif kind == "login":
            self.login()

    def run(self) -> None:
        next_at = time.monotonic() + self.rng.uniform(0, self.interval)
        while not self._stop_event.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop_event.wait(delay):
                break
            next_at = max(next_at + self.interval, time.monotonic())
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a client bug must not end the drill's load silently
                self.recorder.add(
                    Record("list", "read", time.time(), self.recorder.now(), 0.0, 0, error=f"client: {exc!r}")
                )

    def stop(self) -> None:
        self._stop_event.set()


def register(base_url: str, recorder: Recorder, username: str, password: str) -> None:
    rec, body = send(
        session(),
        recorder,
        "register",
        "POST",
        f"{base_url.rstrip('/')}/api/auth/register/",
        json_body={"username": username, "email": f"{username}@bench.invalid", "password": password},
        timeout=30,
    )
    if not rec.ok:
        raise RuntimeError(f"registering {username} failed: {rec.status} {rec.code or rec.error} {body}")


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
