"""The hot-path benchmark's client and meters: a closed loop of keep-alive HTTP/1.1 connections, one thread each,
and the CPU time of the servers, the stack and the client around it.

Why a small client and not locust: on 2 cores the load generator competes with the server for CPU, and what it
costs per request shows up as noise in the server's figures. A thread per connection on ``http.client`` (no
session layer, no retries, no event hooks) costs 0.2-0.4 ms of CPU per request here, measured and reported with
every block (``client``); locust adds gevent, its event hooks and its statistics on top of an HTTP client (not
measured here). The client runs pinned to its own core (this process's affinity, inherited by its threads), the
servers to the other (``taskset``).

- :class:`Plan`: what one *block* sends: ``requests`` operations of one hot path, spread over ``concurrency``
  connections, each connection waiting for its answer before it sends the next (closed loop). An operation is
  one request, or for checkout two on the same connection (the cart add, then ``POST /api/orders/`` with a fresh
  ``Idempotency-Key``), timed together as the customer sees it and each on its own.
- :func:`block_run`: warm each connection, take the CPU meters, release every thread at once, join, take the
  meters again; returns the samples and the CPU deltas.
- :func:`cpu_read`: the CPU of a gunicorn master (utime + stime, ``/proc/<pid>/stat``) and of its workers (every
  thread's ``/proc/<pid>/task/*/schedstat``: exact, where ticks are 10 ms; the children alive at both readings: a
  worker that died would be reported as an error, none is expected), of the stack's PostgreSQL and Redis process
  families, and of this process.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import HOST

PATHS = ("list", "detail", "token", "cart", "checkout")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One operation as its connection saw it. ``status`` 0: no answer (``error`` says why)."""

    path: str
    latency: float  # seconds, body read; checkout: cart add + order
    status: int
    parts: list[float] = field(default_factory=list)  # checkout: [cart add, order] seconds
    error: str = ""


@dataclass
class Accounts:
    """What the paths need: product ids, a login, the cart readers' and the shoppers' access tokens."""

    product_ids: list[int]
    login: tuple[str, str]
    readers: list[str]
    shoppers: list[str]


class Connection:
    """One keep-alive connection; reopened after an error (counted as a failed operation, never retried)."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers={**JSON_HEADERS, **(headers or {})})
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return response.status

    def close(self) -> None:
        self.conn.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Plan:
    """The operations of one path, per connection: ``step(conn, lane, k)`` sends the k-th of connection ``lane``."""

    def __init__(self, path: str, accounts: Accounts, concurrency: int) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown hot path {path!r}")
        self.path = path
        self.accounts = accounts
        self.concurrency = concurrency
        # A shopper is only ever used by one connection, so no two checkouts of one cart overlap.
        self.lanes = [accounts.shoppers[lane::concurrency] for lane in range(concurrency)]
        if path == "checkout" and not all(self.lanes):
            raise ValueError(f"checkout needs at least {concurrency} shoppers")

    def step(self, conn: Connection, lane: int, k: int) -> Sample:
        a = self.accounts
        started = time.perf_counter()
        try:
            if self.path == "list":
                status = conn.request("GET", "/api/products/?page_size=20")
            elif self.path == "detail":
                product = a.product_ids[(k * self.concurrency + lane) % len(a.product_ids)]
                status = conn.request("GET", f"/api/products/{product}/")
            elif self.path == "token":
                status = conn.request("POST", "/api/auth/token/", {"username": a.login[0], "password": a.login[1]})
            elif self.path == "cart":
                status = conn.request("GET", "/api/cart/", headers=_bearer(a.readers[(k + lane) % len(a.readers)]))
            else:
                return self._checkout(conn, lane, k, started)
        except (OSError, http.client.HTTPException) as exc:
            return Sample(self.path, time.perf_counter() - started, 0, error=type(exc).__name__)
        return Sample(self.path, time.perf_counter() - started, status)

    def _checkout(self, conn: Connection, lane: int, k: int, started: float) -> Sample:
        a = self.accounts
        shoppers = self.lanes[lane]
        auth = _bearer(shoppers[k % len(shoppers)])
        product = a.product_ids[(k * self.concurrency + lane) % len(a.product_ids)]
        try:
            added = conn.request("POST", "/api/cart/items/", {"product_id": product, "quantity": 1}, auth)
            mid = time.perf_counter()
            if added != 201:
                return Sample(self.path, mid - started, added, [mid - started], error="cart add")
            ordered = conn.request("POST", "/api/orders/", None, {**auth, "Idempotency-Key": uuid.uuid4().hex})
        except (OSError, http.client.HTTPException) as exc:
            return Sample(self.path, time.perf_counter() - started, 0, error=type(exc).__name__)
        end = time.perf_counter()
        return Sample(self.path, end - started, ordered, [mid - started, end - mid])

    def expected(self, status: int) -> bool:
        return status == (201 if self.path == "checkout" else 200)


# ----------------------------------------------------------------------------------------------------------
# CPU meters
# ----------------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children_of(parents: set[int]) -> dict[int, int]:
    """pid -> parent pid, of every process whose parent is in ``parents``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) in parents:
                found[int(entry)] = int(fields[1])
    return found


def _cpu(pid: int, *, reaped: bool = False) -> float:
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    return ticks / _TICK


def cpu_read(servers: dict[str, int], stack: list[int]) -> dict[str, Any]:
    """CPU seconds so far: each server (master + workers, by worker), the stack's families, this process."""
    children = children_of(set(servers.values()) | set(stack))
    per_server = {}
    for name, master in servers.items():
        # The workers exactly (every thread's schedstat, in ns): a short block's CPU is tens of 10 ms ticks at most.
        workers = {pid: _runtime_ns(pid) / 1e9 for pid, parent in children.items() if parent == master}
        per_server[name] = {"master": _cpu(master), "workers": workers}
    stack_cpu = sum(_cpu(pid, reaped=True) for pid in stack)
    stack_cpu += sum(_cpu(pid) for pid, parent in children.items() if parent in stack)
    return {
        "t": time.perf_counter(),
        "self": time.process_time(),
        "servers": per_server,
        "stack": stack_cpu,
        "machine": machine_busy(),
    }


def cpu_between(before: dict[str, Any], after: dict[str, Any], server: str) -> dict[str, Any]:
    """CPU seconds over the interval: ``server``'s workers (those alive at both readings) and master, the stack,
    this process; ``workers_changed`` when a worker came or went (its time would be missing)."""
    b, a = before["servers"][server], after["servers"][server]
    same = set(b["workers"]) & set(a["workers"])
    return {
        "wall": after["t"] - before["t"],
        "workers": sum(a["workers"][pid] - b["workers"][pid] for pid in same),
        "per_worker": sorted(round(a["workers"][pid] - b["workers"][pid], 3) for pid in same),
        "master": a["master"] - b["master"],
        "stack": after["stack"] - before["stack"],
        "client": after["self"] - before["self"],
        "machine": after["machine"] - before["machine"],  # every process, ours and others'
        "workers_changed": set(b["workers"]) != set(a["workers"]),
    }


def _runtime_ns(pid: int) -> int:
    """CPU nanoseconds of every thread of ``pid`` so far (``/proc/<pid>/task/*/schedstat``: exact, not in ticks)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return total


def idle_cpu(master: int, seconds: float) -> dict[str, Any]:
    """The workers of the server ``master`` with no traffic for ``seconds``: their CPU per second (the layer's
    background threads -- probes, housekeeping, snapshot -- are what runs then), and the workers measured."""
    workers = [pid for pid, parent in children_of({master}).items() if parent == master]
    before = {pid: _runtime_ns(pid) for pid in workers}
    started = time.perf_counter()
    time.sleep(seconds)
    after = {pid: _runtime_ns(pid) for pid in workers}
    wall = time.perf_counter() - started
    used = sum(after[pid] - before[pid] for pid in workers if after[pid] and before[pid])
    return {"workers": len(workers), "wall": round(wall, 4), "cpu_ms_per_s": round(used / 1e6 / wall, 3)}


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot, over every core (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK  # all but idle and iowait


# ----------------------------------------------------------------------------------------------------------
# A block
# ----------------------------------------------------------------------------------------------------------


def block_run(
    plan: Plan,
    port: int,
    requests: int,
    *,
    warmup: int,
    timeout: float,
    meter: Callable[[], dict[str, Any]],
) -> tuple[list[Sample], dict[str, Any], dict[str, Any], int]:
    """``requests`` operations of ``plan`` over ``plan.concurrency`` connections, after ``warmup`` each; returns the
    samples, the meters before and after, and how many warm-up operations failed."""
    c = plan.concurrency
    counter = itertools.count()
    counter_lock = threading.Lock()
    ready = threading.Barrier(c + 1)  # every connection warmed: the meters are read
    go = threading.Barrier(c + 1)  # then every connection starts at once
    done = threading.Barrier(c + 1)
    samples: list[list[Sample]] = [[] for _ in range(c)]
    warm_failed = [0] * c

    def lane_run(lane: int) -> None:
        conn = Connection(port, timeout)
        try:
            for k in range(warmup):
                if not plan.expected(plan.step(conn, lane, k).status):
                    warm_failed[lane] += 1
            ready.wait()
            go.wait()
            k = warmup  # checkouts go on with the next shopper after the warm-up's
            while True:
                with counter_lock:
                    n = next(counter)
                if n >= requests:
                    break
                samples[lane].append(plan.step(conn, lane, k))
                k += 1
            done.wait()
        finally:
            conn.close()

    threads = [threading.Thread(target=lane_run, args=(lane,), daemon=True) for lane in range(c)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=600)
    before = meter()
    go.wait(timeout=60)
    done.wait(timeout=3600)
    after = meter()
    for thread in threads:
        thread.join(timeout=60)
    return [s for lane in samples for s in lane], before, after, sum(warm_failed)
