"""The serving benchmark's load and instruments: the stuck catalog dependency, the open-loop catalog flood, the
login and checkout clients, the health probes, and the CPU meters.

- :class:`CategoryLock`: an operator's migration that holds ``LOCK TABLE shop_category IN ACCESS EXCLUSIVE
  MODE`` in an open transaction on the primary. PostgreSQL WAL-logs the lock and the replica's startup process
  takes it too when it replays the record, so catalog reads wait on either node. The lock is taken, then small
  commits are made until the WAL carrying it has been flushed and replayed (the record sits in a WAL page until
  something flushes it), and the replica's ``pg_locks`` is read back as evidence.
- :class:`Flood`: ``GET /api/products/<id>/`` at a fixed Poisson arrival rate, whatever the server answers: a
  dispatcher thread hands each arrival at its due time to one of many sender threads (enough that one is always
  free, so a slow answer never delays the next arrival; the delay is recorded to show it), over one urllib3
  pool of keep-alive connections (LIFO, a stale one replaced before use, never a retry).
- :class:`LoginClient` and :class:`CheckoutClient`: one closed loop each on its own keep-alive connection,
  recording every request (errors and client timeouts too, at the time they took).
- :class:`Prober`: ``GET /health/ready`` then ``GET /health/live`` every ``interval``, each on a new connection
  with a 1 s timeout, as a kubelet probes.
- :func:`cpu_sample`: this process's CPU time, the server's (master and workers) and the whole machine's, so a
  phase can say how much CPU it used and that the flood did not saturate the cores.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import urllib3

from bench.harness import HOST

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _error_code(body: bytes) -> str:
    """The error envelope's ``code`` (``overloaded``, ``request_timeout`` ...), or ``""``."""
    if not body.startswith(b"{"):
        return ""
    try:
        error = json.loads(body).get("error")
    except ValueError:
        return ""
    return error.get("code", "") if isinstance(error, dict) else ""


@dataclass
class Sample:
    """One request as its client saw it. ``status`` 0 = no answer: ``error`` says why (``timeout``, ``conn``)."""

    kind: str
    start: float  # time.monotonic() when sent
    latency: float  # seconds (the timeout, for a request that got no answer in time)
    status: int
    code: str = ""  # the error envelope's code
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def call(
    pool: urllib3.HTTPConnectionPool,
    kind: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float,
) -> tuple[Sample, bytes]:
    started = time.monotonic()
    try:
        response = pool.request(
            method,
            path,
            body=None if body is None else json.dumps(body).encode(),
            headers={**JSON_HEADERS, **(headers or {})},
            timeout=urllib3.Timeout(connect=min(2.0, timeout), read=timeout),
            retries=False,
            redirect=False,
        )
    except (urllib3.exceptions.TimeoutError, TimeoutError):
        return Sample(kind, started, time.monotonic() - started, 0, error="timeout"), b""
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Sample(kind, started, time.monotonic() - started, 0, error=f"conn: {type(exc).__name__}"), b""
    latency = time.monotonic() - started
    data = response.data
    code = _error_code(data) if response.status >= 400 else ""
    return Sample(kind, started, latency, response.status, code), data


# ----------------------------------------------------------------------------------------------------------
# The stuck catalog dependency
# ----------------------------------------------------------------------------------------------------------


class CategoryLock:
    """``LOCK TABLE shop_category IN ACCESS EXCLUSIVE MODE`` held in an open transaction on the primary."""

    SQL = "LOCK TABLE shop_category IN ACCESS EXCLUSIVE MODE"

    def __init__(self, primary_url: str, replica_url: str) -> None:
        self.primary_url = primary_url
        self.replica_url = replica_url
        self._conn: psycopg.Connection[Any] | None = None

    def take(self, timeout: float = 15.0) -> dict[str, Any]:
        """Take the lock; return once the replica holds it too. Evidence: the LSN, the replica's lock row."""
        started = time.monotonic()
        conn = psycopg.connect(self.primary_url, autocommit=False, application_name="bench-serving-migration")
        conn.execute(self.SQL)
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        self._conn = conn
        replayed = False
        with (
            psycopg.connect(self.primary_url, autocommit=True) as other,
            psycopg.connect(self.replica_url, autocommit=True) as replica,
        ):
            while time.monotonic() - started < timeout:
                other.execute("SELECT txid_current()")  # a commit: the WAL holding the lock record gets flushed
                replayed = replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
                if replayed:
                    break
                time.sleep(0.05)
            held = replica.execute(
                "SELECT l.mode, l.granted, coalesce(a.backend_type, 'startup process (replaying the primary''s lock)') "
                "FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'relation' AND l.relation = 'shop_category'::regclass"
            ).fetchall()
        if not replayed:
            self.release()
            raise RuntimeError(f"the replica did not replay the lock (LSN {lsn}) within {timeout:.0f} s")
        return {
            "lsn": lsn,
            "seconds_to_replica": round(time.monotonic() - started, 3),
            "replica_locks": [list(row) for row in held],
        }

    def waiting(self) -> dict[str, dict[str, int]]:
        """The statements waiting for a lock on shop_category right now, per node: text (literals as ``?``) ->
        how many (evidence of who waits)."""
        found: dict[str, dict[str, int]] = {}
        for node, url in (("primary", self.primary_url), ("replica", self.replica_url)):
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE NOT l.granted AND l.locktype = 'relation' AND l.relation = 'shop_category'::regclass"
                ).fetchall()
            counts: dict[str, int] = {}
            for (query,) in rows:
                shape = re.sub(r"\b\d+\b", "?", query)
                counts[shape] = counts.get(shape, 0) + 1
            found[node] = counts
        return found

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.rollback()
            finally:
                conn.close()

    @property
    def held(self) -> bool:
        return self._conn is not None


# ----------------------------------------------------------------------------------------------------------
# The open-loop flood
# ----------------------------------------------------------------------------------------------------------


@dataclass
class FloodRecord:
    due: float  # monotonic time the arrival was scheduled for
    delay: float  # seconds from due to sent (the generator's own lag; ~0 while open-loop holds)
    latency: float
    status: int
    code: str
    error: str


class Flood:
    """``GET /api/products/<id>/`` arriving at ``rate`` per second (Poisson), none waiting for another."""

    def __init__(
        self, port: int, rate: float, product_ids: list[int], *, timeout: float, senders: int, seed: int
    ) -> None:
        self.rate = rate
        self.product_ids = product_ids
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.pool = urllib3.HTTPConnectionPool(HOST, port, maxsize=senders, block=False, retries=False)
        self.records: list[FloodRecord] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[float, str] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._senders = [threading.Thread(target=self._send_loop, daemon=True) for _ in range(senders)]
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self._busy = 0
        self.peak_busy = 0
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.arrivals = 0

    def start(self) -> None:
        for sender in self._senders:
            sender.start()
        self.started_at = time.monotonic()
        self._dispatcher.start()

    def _dispatch(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            due += self.rng.expovariate(self.rate)
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            self._queue.put((due, f"/api/products/{self.rng.choice(self.product_ids)}/"))
            self.arrivals += 1

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            due, path = item
            with self._lock:
                self._busy += 1
                self.peak_busy = max(self.peak_busy, self._busy)
            sent = time.monotonic()
            sample, _ = call(self.pool, "flood", "GET", path, timeout=self.timeout)
            with self._lock:
                self._busy -= 1
                self.records.append(
                    FloodRecord(due, sent - due, sample.latency, sample.status, sample.code, sample.error)
                )

    def stop(self, wait: float) -> None:
        """No more arrivals; wait up to ``wait`` seconds for the requests in flight (each ends by its timeout)."""
        self._stop.set()
        self._dispatcher.join()
        self.stopped_at = time.monotonic()
        for _ in self._senders:
            self._queue.put(None)
        deadline = time.monotonic() + wait
        for sender in self._senders:
            sender.join(max(0.0, deadline - time.monotonic()))
        self.pool.close()


# ----------------------------------------------------------------------------------------------------------
# The measured clients and the probes
# ----------------------------------------------------------------------------------------------------------


class _Loop:
    """A client thread that runs ``step`` until stopped, starting a step at most every ``interval`` seconds."""

    def __init__(self, port: int, interval: float) -> None:
        self.pool = urllib3.HTTPConnectionPool(HOST, port, maxsize=1, block=False, retries=False)
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.step()
            rest = self.interval - (time.monotonic() - began)
            if rest > 0:
                self._stop.wait(rest)

    def start(self) -> None:
        self._stop.clear()
        self.samples = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


class LoginClient(_Loop):
    """``POST /api/auth/token/`` with a real account (its PBKDF2 hash checked each time), back to back."""

    def __init__(self, port: int, username: str, password: str, *, timeout: float) -> None:
        super().__init__(port, interval=0.0)
        self.body = {"username": username, "password": password}
        self.timeout = timeout

    def step(self) -> None:
        sample, _ = call(self.pool, "login", "POST", "/api/auth/token/", body=self.body, timeout=self.timeout)
        self.samples.append(sample)


class CheckoutClient(_Loop):
    """One checkout every ``interval`` seconds, each as the next shopper in turn.

    ``with_cart_add``: ``POST /api/cart/items/`` then ``POST /api/orders/`` (the sample is both, back to back);
    otherwise the shopper's cart was filled beforehand (:func:`carts_fill`) and the sample is the order alone.
    Every order carries a fresh ``Idempotency-Key``.
    """

    def __init__(
        self,
        port: int,
        tokens: list[str],
        product_ids: list[int],
        *,
        interval: float,
        timeout: float,
        with_cart_add: bool,
        seed: int,
    ) -> None:
        super().__init__(port, interval)
        self.tokens = tokens
        self.product_ids = product_ids
        self.timeout = timeout
        self.with_cart_add = with_cart_add
        self.rng = random.Random(seed)
        self.next_shopper = 0

    def step(self) -> None:
        token = self.tokens[self.next_shopper % len(self.tokens)]
        self.next_shopper += 1
        auth = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        parts: dict[str, Any] = {}
        if self.with_cart_add:
            cart, _ = call(
                self.pool,
                "cart_add",
                "POST",
                "/api/cart/items/",
                body={"product_id": self.rng.choice(self.product_ids), "quantity": 1},
                headers=auth,
                timeout=self.timeout,
            )
            parts["cart_add"] = {"latency": cart.latency, "status": cart.status, "code": cart.code}
            if cart.status != 201:
                self.samples.append(
                    Sample("checkout", started, cart.latency, cart.status, cart.code, cart.error, {"parts": parts})
                )
                return
        order, _ = call(
            self.pool,
            "order",
            "POST",
            "/api/orders/",
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            timeout=self.timeout,
        )
        parts["order"] = {"latency": order.latency, "status": order.status, "code": order.code}
        self.samples.append(
            Sample(
                "checkout",
                started,
                time.monotonic() - started,
                order.status,
                order.code,
                order.error,
                {"parts": parts},
            )
        )


def carts_fill(port: int, tokens: list[str], product_ids: list[int], *, seed: int, timeout: float) -> list[Sample]:
    """Put one product in each shopper's cart (sequentially, one keep-alive connection): what an order takes."""
    rng = random.Random(seed)
    pool = urllib3.HTTPConnectionPool(HOST, port, maxsize=1, block=False, retries=False)
    samples = []
    for token in tokens:
        sample, _ = call(
            pool,
            "cart_add",
            "POST",
            "/api/cart/items/",
            body={"product_id": rng.choice(product_ids), "quantity": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        samples.append(sample)
    pool.close()
    return samples


class Prober(_Loop):
    """``GET /health/ready`` and ``GET /health/live`` every ``interval`` seconds, new connection, 1 s timeout."""

    TIMEOUT = 1.0

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(port, interval)
        self.port = port  # each probe on a new connection (as a load balancer's), not the pool's

    def _probe(self, path: str) -> Sample:
        kind = "ready" if path.endswith("ready") else "live"
        started = time.monotonic()
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.TIMEOUT)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
        except TimeoutError:
            return Sample(kind, started, time.monotonic() - started, 0, error="timeout")
        except (OSError, http.client.HTTPException) as exc:
            return Sample(kind, started, time.monotonic() - started, 0, error=f"conn: {type(exc).__name__}")
        finally:
            conn.close()
        latency = time.monotonic() - started
        extra = {}
        if kind == "ready" and body.startswith(b"{"):
            try:
                extra["health"] = json.loads(body).get("status", "")
            except ValueError:
                pass
        return Sample(kind, started, latency, response.status, "", "", extra)

    def step(self) -> None:
        self.samples.append(self._probe("/health/ready"))
        self.samples.append(self._probe("/health/live"))


# ----------------------------------------------------------------------------------------------------------
# CPU
# ----------------------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over every core."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / _TICK, total / _TICK


def stack_pids(name: str, redis_port: int) -> list[int]:
    """The stack's PostgreSQL postmasters and its Redis server (found by command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        postmaster = " -D " in cmdline and (f"/{name}/primary/" in cmdline or f"/{name}/replica/" in cmdline)
        redis = "redis-server" in cmdline and f":{redis_port}" in cmdline
        if postmaster or redis:
            found.append(int(entry))
    return found


def _family_cpu(pid: int) -> float:
    """A postmaster's CPU with its backends': its own and reaped children's, plus the live children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(x) for x in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
    return own + sum(_proc_cpu(c) for c in _children(pid))


def cpu_sample(server_pids: dict[str, int], stack: list[int]) -> dict[str, Any]:
    """CPU seconds so far: this process, each server (master + workers), the stack, the machine (busy, total)."""
    busy, total = _machine()
    servers = {name: _proc_cpu(pid) + sum(_proc_cpu(c) for c in _children(pid)) for name, pid in server_pids.items()}
    return {
        "t": time.monotonic(),
        "self": time.process_time(),
        "servers": servers,
        "stack": sum(_family_cpu(pid) for pid in stack),
        "busy": busy,
        "total": total,
    }


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Over the interval, cores used by: this process, each server, the stack, the machine (2.0 = both cores)."""
    wall = max(1e-9, after["t"] - before["t"])
    return {
        "seconds": round(wall, 2),
        "load_generator": round((after["self"] - before["self"]) / wall, 3),
        "servers": {n: round((after["servers"][n] - before["servers"][n]) / wall, 3) for n in after["servers"]},
        "stack": round((after["stack"] - before["stack"]) / wall, 3),
        "machine": round((after["busy"] - before["busy"]) / wall, 3),
    }
