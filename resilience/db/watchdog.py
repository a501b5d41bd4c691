"""Client-side deadlines for queries: one thread cuts off any query that runs past its deadline.

Against a hung PostgreSQL (the whole postmaster family stopped) a query on an open connection waits
forever: TCP keepalives never fire because the kernel still acknowledges. Shutting the connection's
socket down makes psycopg raise OperationalError at once, which the backend treats as the node failing.
One thread for the whole process; arming and disarming a deadline is a heap push and a dict delete (a target is a
named tuple: a frozen dataclass's ``__init__`` set each of its fields through ``object.__setattr__``, 1.3 us of
every statement's 3 us arm and disarm).

A process that was frozen (an AWS Lambda environment between invocations, a SIGSTOP, a VM paused) finds its
deadlines passed when it runs again, although the node never had the time to answer. So the watchdog notices
when it wakes :data:`FREEZE_GAP` or more after a deadline -- its own thread did not run -- and gives each target
due during the gap its whole time again, once, instead of cutting it (:attr:`QueryWatchdog.freezes` counts the
gaps, for those that measure latency). A real hang still cuts: the watchdog itself keeps running on time then.

A statement that is merely slow (waiting on a lock, a heavy plan) on a node that answers is not a failed node:
cutting its socket would mark a healthy primary down. A target armed with ``cancel`` gets that first at its
deadline (a PostgreSQL cancel request, sent off this thread); only if the statement is still running
:data:`CANCEL_GRACE` later -- the cancel did not take, the node does not answer -- is the socket cut. The node
monitor's probe uses the same two stages with a grace of its own (:meth:`QueryWatchdog.arm`'s ``grace``): at the
first its node is suspect (its safe reads hedged off), at the second the probe is cut -- one target per probe on
an open connection, not a timer and a deadline (a probe that must connect first keeps a timer for the suspicion).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

logger = logging.getLogger(__name__)

FREEZE_GAP = 1.0  # seconds late: the process was not running (a freeze), not a node that failed to answer
CANCEL_GRACE = 0.5  # seconds a cancel is given to take (a live node obeys in milliseconds) before the cut


class _Target(NamedTuple):
    fileno: int | None  # the connection's socket; None for a timer
    label: str  # the node's alias (the probe's: "<alias> (probe)")
    port: int | None = None  # the server port the socket was connected to (see _shut: a reused fd is left alone)
    rerunnable: bool = False  # a read of a request that may run again elsewhere (see cut_rerunnable)
    callback: Callable[[], object] | None = None  # a timer: called at the deadline instead of cutting
    seconds: float = 0.0  # the time it was given (given again, once, after a freeze)
    extended: bool = False  # already given its time again after a freeze
    # Tried first at the deadline: True when a cancel request was sent (the cut then waits ``grace``); False
    # when the node is not worth asking (down or suspect: cut now). Must not block (the watchdog's thread).
    cancel: Callable[[], bool] | None = None
    cancelled: bool = False  # its cancel was sent: the next deadline is the cut
    grace: float = CANCEL_GRACE  # seconds between a cancel that took and the cut
    announced: bool = True  # the first stage logged as a statement's cancel (False: the caller's own, the probe's)


class QueryWatchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, _Target] = {}
        self._hedged: set[int] = set()  # tickets cut off by cut_rerunnable (their node suspect, not down)
        self._tickets = itertools.count(1)
        self._thread: threading.Thread | None = None
        self.freezes = 0  # grows with every freeze seen (a deadline due during it given its time again)
        self.wakes = 0  # times its thread woke (a test counts them: not one per query that ended in time)

    def arm(
        self,
        fileno: int,
        seconds: float,
        label: str,
        *,
        port: int | None = None,
        rerunnable: bool = False,
        cancel: Callable[[], bool] | None = None,
        grace: float = CANCEL_GRACE,
        announced: bool = True,
    ) -> int:
        """Cut the socket ``fileno`` after ``seconds`` unless disarmed first. With ``cancel``: call it then instead
        (on this thread: it must not block); if it returns True, cut ``grace`` seconds later, else at once. The
        cancel is logged as a statement's unless ``announced`` is False (a first stage that logs for itself)."""
        target = _Target(fileno, label, port, rerunnable, None, seconds, False, cancel, False, grace, announced)
        return self._arm(seconds, target)

    def call_after(self, seconds: float, callback: Callable[[], object], label: str) -> int:
        """Call ``callback`` on the watchdog's thread after ``seconds`` unless disarmed first (a probe overdue)."""
        return self._arm(seconds, _Target(None, label, callback=callback, seconds=seconds))

    def _arm(self, seconds: float, target: _Target) -> int:
        deadline = time.monotonic() + seconds
        with self._lock:
            ticket = next(self._tickets)
            self._armed[ticket] = target
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
            self._hedged.discard(ticket)

    def hedged(self, ticket: int) -> bool:
        """Whether :meth:`cut_rerunnable` cut this ticket's query off (its caller retries elsewhere)."""
        with self._lock:
            return ticket in self._hedged

    def cut_node(self, label: str) -> int:
        """Cut off every query in flight under ``label`` now (its node was found dead); returns how many.

        The requests waiting on them fail at once and are run again elsewhere, instead of each waiting out its own
        deadline on a node that will not answer.
        """
        return self._cut_where(lambda target: target.label == label, hedge=False)

    def cut_rerunnable(self, label: str) -> int:
        """Cut off the queries in flight under ``label`` whose requests may run again elsewhere (safe reads): the
        node is suspect (its probe overdue), not known dead. A hedge: they re-run on a healthy node now instead of
        waiting for the probe's verdict; :meth:`hedged` tells their caller so (the node is not marked down for it).
        """
        return self._cut_where(lambda target: target.label == label and target.rerunnable, hedge=True)

    def _cut_where(self, chosen: Callable[[_Target], bool], *, hedge: bool) -> int:
        with self._lock:
            targets = [
                (ticket, target)
                for ticket, target in self._armed.items()
                if target.fileno is not None and chosen(target)
            ]
            for ticket, _ in targets:
                del self._armed[ticket]
                if hedge:
                    self._hedged.add(ticket)
        for _, target in targets:
            self._shut(target.fileno, target.label, target.port)  # type: ignore[arg-type]
        return len(targets)

    def _run(self) -> None:
        while True:
            with self._lock:
                # Disarmed tickets stay in the heap (a delete from its middle would cost more than the push); drop
                # the ones on top now, so the thread sleeps until the next deadline still armed instead of waking
                # once for every query that has long ended.
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                while not self._heap:
                    self._lock.wait()
                    self.wakes += 1
                deadline, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(timeout=wait)
                    self.wakes += 1
                    continue
                heapq.heappop(self._heap)
                target = self._armed.pop(ticket, None)
                if target is not None and -wait >= FREEZE_GAP and not target.extended:
                    # Woken this late, the process was frozen: the node had no time to answer. Its time again.
                    self.freezes += 1
                    self._armed[ticket] = target._replace(extended=True)
                    # A two-stage target of the caller's own (the probe's) past its first stage: its whole time.
                    again = target.seconds + (target.grace if target.cancelled and not target.announced else 0.0)
                    heapq.heappush(self._heap, (time.monotonic() + again, ticket))
                    continue
                if target is not None and target.cancel is not None and not target.cancelled:
                    # The cut stays armed (the grace) while the cancel is asked for: a statement that ends
                    # meanwhile disarms it; one that does not is cut when the grace is over.
                    self._armed[ticket] = target._replace(cancelled=True)
                    # A statement's grace runs from its cancel; a probe's cut is due at its first stage + grace,
                    # however late this thread woke for it (under FREEZE_GAP: later is a freeze, above).
                    cut_at = deadline + target.grace if not target.announced else time.monotonic() + target.grace
                    heapq.heappush(self._heap, (cut_at, ticket))
                    cancelling = True
                else:
                    cancelling = False
            if target is None:
                continue
            if cancelling:
                if self._ask(target.cancel, target.label):  # type: ignore[arg-type]
                    if target.announced:
                        logger.warning(
                            "query deadline passed on %s: cancelling the statement",
                            target.label,
                            extra={"node": target.label},
                        )
                    continue
                self.disarm(ticket)  # not worth asking (the node is down or suspect): cut now
            if target.callback is not None:
                self._ask(target.callback, target.label)
            else:
                logger.warning(
                    "query deadline passed on %s%s: cutting the connection off",
                    target.label,
                    " and its cancel did not take" if target.cancelled and target.announced else "",
                    extra={"node": target.label},
                )
                self._shut(target.fileno, target.label, target.port)  # type: ignore[arg-type]

    @staticmethod
    def _ask(callback: Callable[[], object], label: str) -> object:
        try:
            return callback()
        except Exception:  # the one deadline thread of the process must outlive a timer's bug: logged
            logger.exception("watchdog timer %s failed", label)
            return False

    @staticmethod
    def _shut(fileno: int, label: str, port: int | None = None) -> None:
        """Shut the socket down -- unless the fd now belongs to another connection. Between the snapshot of what
        to cut and the cut, the query may have ended and its connection closed, and a new connection (to another
        node) may have been given the same fd number: that one is left alone (seen: a replica's kill cutting off
        a fresh primary connection). The server port tells them apart."""
        try:
            with socket.socket(fileno=os.dup(fileno)) as sock:
                if port is not None and not _connected_to(sock, port):
                    return
                sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:  # already closed: nothing left to cut
            logger.debug("could not shut down the socket of %s: %s", label, exc)


def _connected_to(sock: socket.socket, port: int) -> bool:
    try:
        peer = sock.getpeername()
    except OSError:  # not a connected socket (any more)
        return False
    if isinstance(peer, tuple):
        return peer[1] == port
    return str(peer).endswith(f".s.PGSQL.{port}")  # a unix socket


watchdog = QueryWatchdog()
