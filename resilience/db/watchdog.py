"""Client-side deadlines for queries: one thread cuts off any query that runs past its deadline.

Against a hung PostgreSQL (the whole postmaster family stopped) a query on an open connection waits
forever: TCP keepalives never fire because the kernel still acknowledges. Shutting the connection's
socket down makes psycopg raise OperationalError at once, which the backend treats as the node failing.
One thread for the whole process; arming and disarming a deadline is a heap push and a dict delete.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time

logger = logging.getLogger(__name__)


class QueryWatchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, tuple[int, str]] = {}  # ticket -> (socket fd, label)
        self._tickets = itertools.count(1)
        self._thread: threading.Thread | None = None

    def arm(self, fileno: int, seconds: float, label: str) -> int:
        deadline = time.monotonic() + seconds
        with self._lock:
            ticket = next(self._tickets)
            self._armed[ticket] = (fileno, label)
            heapq.heappush(self._heap, (deadline, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-query-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == ticket:
                self._lock.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._lock:
            self._armed.pop(ticket, None)

    def cut_node(self, label: str) -> int:
        """Cut off every query in flight under ``label`` now (its node was found dead); returns how many.

        The requests waiting on them fail at once and are run again elsewhere, instead of each waiting out its own
        deadline on a node that will not answer.
        """
        with self._lock:
            targets = [(ticket, target) for ticket, target in self._armed.items() if target[1] == label]
            for ticket, _ in targets:
                del self._armed[ticket]
        for _, (fileno, _label) in targets:
            self._shut(fileno, label)
        return len(targets)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                target = self._armed.pop(ticket, None)
            if target is not None:
                self._cut(*target)

    @classmethod
    def _cut(cls, fileno: int, label: str) -> None:
        logger.warning("query deadline passed on %s: cutting the connection off", label, extra={"node": label})
        cls._shut(fileno, label)

    @staticmethod
    def _shut(fileno: int, label: str) -> None:
        try:
            with socket.socket(fileno=os.dup(fileno)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:  # already closed: nothing left to cut
            logger.debug("could not shut down the socket of %s: %s", label, exc)


watchdog = QueryWatchdog()
