"""Revocable staff sessions that keep working while the primary is down.

Admin sessions stay signed cookies (logging in and browsing write nothing, so the admin works with the primary
down), and each carries the *session epoch* of its user at login. Every admin request of a staff user compares
it with the user's current epoch (:func:`session_epoch_current`: the shared cache, else the database, maybe a
replica); an older one is logged out and sent to the login page. Raising the epoch (:func:`session_epoch_bump`)
ends every session of that user on every worker at once: on logout, a staff password change (the session that
changed it is re-stamped and stays, as Django's ``update_session_auth_hash``), a second factor removed, and the
admin action "End all sessions of this user". Each bump is a ``staff_sessions_ended`` resilience event. A session
also ends after ``STAFF_SESSION_IDLE`` (default 30m) without a request; the last activity is kept in the session
and refreshed at most once a minute (the dashboard's own 2 s refresh is not activity).

- **All up**: the bump is written to the primary (one row per user, :class:`StaffSessionEpoch`) and put in Redis
  after the commit; every worker reads Redis on the next request. Redis holds an epoch read from the database
  for :data:`CACHE_SECONDS`.
- **Primary down**: the epoch is read from Redis or a replica; the bump goes to Redis (kept until no session it
  ends can still exist) and waits in this process, written by the node monitor once the primary is back
  (:func:`session_epochs_flush`; an epoch never goes down, so a write repeated after a cut-off adds nothing).
  Other workers refuse the old sessions at once. A worker restarted meanwhile loses its waiting write; Redis still
  refuses those sessions, and the next bump starts above what Redis holds.
- **Redis down**: the bump is written to the primary; the cache serves from each worker's memory, where an
  epoch is kept :data:`MEMORY_SECONDS` only, so the other workers read the database again and refuse the old
  sessions within 2 s. The bump is put in Redis again when it answers (:func:`session_epochs_share`).
- **Primary and Redis down**: the worker that served the logout refuses the session at once (its own memory of
  the bump); the others cannot know yet and follow when a store returns: Redis (the bump is re-published by this
  worker's monitor within about 2 s) or the primary (written, then read by everyone within 2 s).
- **No database node answers**: the check falls back to this worker's own bumps (logged once); admin pages that
  need the database fail on their own anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model, user_logged_in, user_logged_out
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.core.cache import caches
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import QuerySet
from django.db.models.signals import post_save
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, reverse
from django.utils.functional import SimpleLazyObject

from resilience.cache import FallbackCache
from resilience.db.context import primary_reads
from resilience.db.monitor import monitor_task_register
from resilience.db.nodes import PRIMARY
from resilience.events import event_record
from resilience.staff.models import StaffSessionEpoch

logger = logging.getLogger("resilience.staff")

EPOCH_SESSION_KEY = "_staff_session_epoch"
ACTIVE_SESSION_KEY = "_staff_session_active"  # unix time of the last request that counted as activity
CACHE_PREFIX = "staff:session-epoch:"
CACHE_SECONDS = 30  # an epoch the database holds, in Redis (bounds a stale entry: a race, an outage's leftovers)
MEMORY_SECONDS = 1  # any epoch in a worker's memory (Redis down): another worker's bump is seen within 2 s
ACTIVITY_REFRESH_SECONDS = 60  # the last activity is rewritten (a new cookie) at most this often
FLOOR_MAX = 10_000  # users whose latest bump this process remembers
PASSIVE_VIEWS = frozenset({"resilience_panels", "resilience_state"})  # the dashboard's auto-refresh
ENDED_MESSAGE = (
    "Your session was ended (logged out elsewhere, password changed, second factor removed or ended by an "
    "administrator). Please log in again."
)
IDLE_MESSAGE = "Your session ended after {idle} without activity. Please log in again."

_current_request: ContextVar[HttpRequest | None] = ContextVar("bulwark_staff_request", default=None)


class EpochLedger:
    """What this process knows of the bumps it made: the latest epoch per user (refused here whatever the stores
    say), the writes waiting for the primary, and the epochs Redis has not received yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._floor: OrderedDict[int, int] = OrderedDict()
        self._pending: dict[int, int] = {}  # user id -> epoch to write to the database
        self._unshared: dict[int, int] = {}  # user id -> epoch to put in Redis once it answers
        self.failing = False  # the last deferred write failed (logged once per outage)

    def floor(self, user_id: int) -> int:
        with self._lock:
            return self._floor.get(user_id, 0)

    def raise_floor(self, user_id: int, epoch: int) -> None:
        with self._lock:
            self._floor[user_id] = max(epoch, self._floor.get(user_id, 0))
            self._floor.move_to_end(user_id)
            while len(self._floor) > FLOOR_MAX:
                self._floor.popitem(last=False)

    def defer(self, user_id: int, epoch: int) -> None:
        with self._lock:
            self._pending[user_id] = max(epoch, self._pending.get(user_id, 0))

    def pending(self) -> dict[int, int]:
        with self._lock:
            return dict(self._pending)

    def written(self, user_id: int, epoch: int) -> None:
        with self._lock:
            if self._pending.get(user_id, 0) <= epoch:
                self._pending.pop(user_id, None)

    def unshare(self, user_id: int, epoch: int) -> None:
        with self._lock:
            self._unshared[user_id] = max(epoch, self._unshared.get(user_id, 0))

    def to_share(self) -> dict[int, int]:
        """Epochs Redis must hold: those it missed, and every write still waiting (Redis may have restarted)."""
        with self._lock:
            wanted = dict(self._unshared)
            for user_id, epoch in self._pending.items():
                wanted[user_id] = max(epoch, wanted.get(user_id, 0))
            return wanted

    def shared(self, user_id: int, epoch: int) -> None:
        with self._lock:
            if self._unshared.get(user_id, 0) <= epoch:
                self._unshared.pop(user_id, None)

    def forget_floor(self) -> None:
        """Forget this process's own bumps (tests: another worker's view)."""
        with self._lock:
            self._floor.clear()

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._floor.clear()
            self._pending.clear()
            self._unshared.clear()
            self.failing = False

    def reinit_lock(self) -> None:
        """After a fork: a lock another thread of the parent held would never be released in the child."""
        self._lock = threading.Lock()


staff_epochs = EpochLedger()
os.register_at_fork(after_in_child=staff_epochs.reinit_lock)
_read_failing = False  # the last database read of an epoch failed (logged once)


# ---- the stores -------------------------------------------------------------------------------------------


def _key(user_id: int) -> str:
    return f"{CACHE_PREFIX}{user_id}"


def _cache_shared() -> bool:
    """Whether the cache is Redis now (seen by every worker), not this process's memory."""
    store = caches["default"]
    return isinstance(store, FallbackCache) and not store.uses_memory()


def _cache_get(user_id: int) -> int | None:
    value = caches["default"].get(_key(user_id))
    return value if isinstance(value, int) else None


def _cache_put(user_id: int, epoch: int, seconds: float, *, only_if_missing: bool = False) -> bool:
    """Put an epoch in the cache; True when Redis took it. Memory never keeps one longer than MEMORY_SECONDS,
    also when Redis failed during this very call."""
    store = caches["default"]
    shared = _cache_shared()
    timeout = seconds if shared else MEMORY_SECONDS
    (store.add if only_if_missing else store.set)(_key(user_id), epoch, timeout)
    if shared and not _cache_shared():  # Redis failed under the call: the entry went to memory, long-lived
        store.set(_key(user_id), epoch, MEMORY_SECONDS)
        return False
    return shared


def _deferred_seconds() -> int:
    """How long Redis keeps a bump only it holds: until no session that it ends can still be valid."""
    return int(settings.SESSION_COOKIE_AGE) + 60


def _stored_epoch(user_id: int) -> int:
    """The epoch in the database: the primary when it answers, else a replica (DatabaseError when none does)."""
    with primary_reads():
        epoch = StaffSessionEpoch.objects.filter(pk=user_id).values_list("epoch", flat=True).first()
    return epoch or 0


def _epoch(user_id: int, *, strict: bool) -> int:
    """The user's epoch; a database failure raises when ``strict``, else this process's own bumps answer."""
    global _read_failing
    floor = staff_epochs.floor(user_id)
    cached = _cache_get(user_id)
    if cached is not None:
        return max(cached, floor)
    try:
        stored = _stored_epoch(user_id)
    except DatabaseError as exc:
        if strict:
            raise
        if not _read_failing:
            logger.warning("staff session epochs not readable from any database node: %s", exc)
        _read_failing = True
        return floor
    _read_failing = False
    _cache_put(user_id, stored, CACHE_SECONDS, only_if_missing=True)  # a bump's set, if first, wins
    return max(stored, floor)


def session_epoch_current(user_id: int) -> int:
    """The user's session epoch: the cache first; on a miss the database (the primary when it answers, else a
    replica; then cached); never below a bump this process made. No database node answering: this process's own
    bumps (logged once)."""
    return _epoch(user_id, strict=False)


def _write_epoch(user_id: int, *, at_least: int, increment: bool) -> int:
    """In one transaction on the primary: the row's epoch raised to above (``increment``) or to ``at_least``;
    returns the stored epoch. DatabaseError while the primary is down."""
    with transaction.atomic():
        row, _ = StaffSessionEpoch.objects.select_for_update().get_or_create(pk=user_id)
        epoch = max(row.epoch, at_least) + (1 if increment else 0)
        if epoch != row.epoch:
            row.epoch = epoch
            row.save(update_fields=["epoch", "updated_at"])
    return epoch


def _actor_name(actor: Any) -> str:
    if actor is None:
        request = _current_request.get()
        actor = getattr(request, "user", None) if request is not None else None
    if actor is None or isinstance(actor, str):
        return actor or "system"
    return actor.get_username() if getattr(actor, "is_authenticated", False) else "anonymous"


def session_epoch_bump(*, user: Any, reason: str, actor: Any = None, keep_session: HttpRequest | None = None) -> int:
    """End every session of ``user``: raise their epoch (the primary, else the cache and a deferred write).

    ``actor`` (a user or a name) is recorded as who did it; by default the user of the admin request being served.
    ``keep_session``: a request of this user whose session stays valid (re-stamped with the new epoch). Returns
    the new epoch.
    """
    user_id = user.pk
    by = _actor_name(actor)
    known = max(_cache_get(user_id) or 0, staff_epochs.floor(user_id))  # Redis may hold a bump the database lacks
    try:
        epoch = _write_epoch(user_id, at_least=known, increment=True)
    except DatabaseError as exc:
        epoch = max(known, _epoch(user_id, strict=False)) + 1
        staff_epochs.defer(user_id, epoch)
        staff_epochs.raise_floor(user_id, epoch)
        if not _cache_put(user_id, epoch, _deferred_seconds()):
            staff_epochs.unshare(user_id, epoch)
        logger.warning(
            "staff sessions of %s ended (%s) in the cache only: the epoch is written when the primary is back (%s)",
            user.get_username(),
            reason,
            exc,
            extra={"event": "staff_sessions_ended", "user_id": user_id, "epoch": epoch, "deferred": True},
        )
        _recorded(user, epoch, reason=reason, by=by, deferred=True)
    else:
        transaction.on_commit(lambda: _published(user, epoch, reason=reason, by=by))
    if keep_session is not None:
        session_stamp(keep_session, epoch)
    return epoch


def _published(user: Any, epoch: int, *, reason: str, by: str) -> None:
    staff_epochs.raise_floor(user.pk, epoch)
    if not _cache_put(user.pk, epoch, CACHE_SECONDS):
        staff_epochs.unshare(user.pk, epoch)
    logger.info(
        "staff sessions of %s ended (%s) by %s",
        user.get_username(),
        reason,
        by,
        extra={"event": "staff_sessions_ended", "user_id": user.pk, "epoch": epoch, "deferred": False},
    )
    _recorded(user, epoch, reason=reason, by=by, deferred=False)


def _recorded(user: Any, epoch: int, *, reason: str, by: str, deferred: bool) -> None:
    event_record(
        "staff_sessions_ended",
        subject=user.get_username(),
        message=f"Every admin session of {user.get_username()} ended ({reason}).",
        detail={"by": by, "reason": reason, "epoch": epoch, "deferred": deferred},
    )


# ---- the monitor's tasks ----------------------------------------------------------------------------------


def session_epochs_flush() -> int:
    """The node monitor's task while the primary answers: write the bumps made while it was down. Returns how many
    were written; the rest wait for the next try."""
    pending = staff_epochs.pending()
    if not pending:
        return 0
    written = 0
    try:
        for user_id, epoch in pending.items():
            try:
                stored = _write_epoch(user_id, at_least=epoch, increment=False)
            except IntegrityError as exc:  # the user was deleted meanwhile: nothing left to protect
                logger.info("staff session epoch of user %s dropped: %s", user_id, exc)
                staff_epochs.written(user_id, epoch)
                continue
            except DatabaseError as exc:
                if not staff_epochs.failing:  # once per outage, not every second
                    logger.info("%d staff session epoch(s) not written yet: %s", len(pending), exc)
                staff_epochs.failing = True
                return written
            staff_epochs.written(user_id, epoch)
            if not _cache_put(user_id, stored, CACHE_SECONDS):
                staff_epochs.unshare(user_id, stored)
            written += 1
        staff_epochs.failing = False
        if written:
            logger.info("wrote %d deferred staff session epoch(s)", written, extra={"event": "staff_epochs_flushed"})
        return written
    finally:
        primary = connections[PRIMARY]
        if not primary.in_atomic_block:  # the monitor's thread: no request end closes its connection
            primary.close()


def session_epochs_share() -> None:
    """The node monitor's task, always: once Redis answers, put in it the bumps it has not seen (made while it was
    down, or waiting for the primary and lost by a Redis restart), so the other workers refuse those sessions."""
    wanted = staff_epochs.to_share()
    if not wanted or not _cache_shared():
        return
    for user_id, epoch in wanted.items():
        cached = _cache_get(user_id)
        pending = staff_epochs.pending().get(user_id, 0) >= epoch
        took = True
        if cached is None or cached < epoch:
            took = _cache_put(user_id, epoch, _deferred_seconds() if pending else CACHE_SECONDS)
        if took:
            staff_epochs.shared(user_id, epoch)


# ---- sessions ---------------------------------------------------------------------------------------------


def session_stamp(request: HttpRequest, epoch: int | None = None) -> None:
    """Mark this request's session as opened in ``epoch`` (default: the user's current one), active now."""
    if epoch is None:
        epoch = session_epoch_current(request.user.pk)
    request.session[EPOCH_SESSION_KEY] = epoch
    request.session[ACTIVE_SESSION_KEY] = int(time.time())


def _is_staff(user: Any) -> bool:
    return bool(
        getattr(user, "is_authenticated", False)
        and (getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))
    )


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """The stamp at login (``login()`` sends the signal after the new session is set up)."""
    if request is not None and hasattr(request, "session") and _is_staff(user):
        session_stamp(request, session_epoch_current(user.pk))


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if _is_staff(user):
        session_epoch_bump(user=user, reason="logged out", actor=user)


def _password_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """``AbstractBaseUser.save`` keeps the new raw password in ``_password`` until after ``post_save`` (a hash
    upgrade at login clears it first: not a change)."""
    if created or raw or getattr(instance, "_password", None) is None or not _is_staff(instance):
        return
    request = _current_request.get()
    own = request is not None and getattr(getattr(request, "user", None), "pk", None) == instance.pk
    session_epoch_bump(user=instance, reason="password changed", keep_session=request if own else None)


@admin.action(description="End all sessions of this user (admin)", permissions=["change"])
def end_staff_sessions(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """The user admin's action: every admin session of the selected users ends (on every worker, within 2 s)."""
    users = list(queryset)
    for user in users:
        session_epoch_bump(user=user, reason="ended by an administrator", actor=request.user)
    modeladmin.message_user(request, f"Every admin session of {len(users)} user(s) ended.")


@lru_cache(maxsize=8)
def _admin_prefix(script_prefix: str) -> str:
    return reverse("admin:index")


class StaffSessionMiddleware:
    """Ends stale staff sessions on admin requests: an epoch older than the user's, or idle too long.

    Place it after the authentication middleware. Requests outside the admin URL prefix are not looked at (no
    query, no cache call).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(_admin_prefix(get_script_prefix())):
            return self.get_response(request)
        token = _current_request.set(request)  # who is acting, for a bump made while serving it
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> HttpResponse | None:
        # Here rather than in __call__: the messages middleware has run, and a response returned passes it.
        if _current_request.get() is not request:
            return None
        try:
            if not _is_staff(getattr(request, "user", None)):
                return None
            stamp = request.session.get(EPOCH_SESSION_KEY)
            stale = not isinstance(stamp, int) or stamp < _epoch(request.user.pk, strict=True)
        except DatabaseError as exc:
            # A node failed as the user or the epoch was read. Raised here, the error would bypass the routing
            # middleware (it re-runs a request whose *view* met a failed node): the view meets it instead.
            request.user = SimpleLazyObject(partial(_reraise, exc))
            return None
        if stale:
            return self._end(request, "ended elsewhere", ENDED_MESSAGE)
        session = request.session
        now = int(time.time())
        idle = settings.BULWARK_CONFIG.staff_session_idle.total_seconds()
        last = session.get(ACTIVE_SESSION_KEY)
        if isinstance(last, int) and now - last > idle:
            return self._end(request, "idle", IDLE_MESSAGE.format(idle=_duration(idle)))
        passive = getattr(request.resolver_match, "url_name", None) in PASSIVE_VIEWS
        if not isinstance(last, int) or (not passive and now - last >= min(ACTIVITY_REFRESH_SECONDS, idle / 2)):
            session[ACTIVE_SESSION_KEY] = now
        return None

    @staticmethod
    def _end(request: HttpRequest, why: str, text: str) -> HttpResponse:
        """``logout`` without its signal (which would bump again): flush the session, to the login page."""
        logger.info(
            "staff session of %s refused (%s) by worker %d",
            request.user.get_username(),
            why,
            os.getpid(),
            extra={"event": "staff_session_refused", "user_id": request.user.pk, "why": why},
        )
        request.session.flush()
        request.user = AnonymousUser()
        messages.warning(request, text, fail_silently=True)
        login_url = reverse("admin:login")
        back = request.get_full_path() if request.method == "GET" else reverse("admin:index")
        return redirect_to_login(back, login_url)


def _reraise(exc: BaseException) -> Any:
    raise exc


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min" if minutes and not rest else f"{int(seconds)} s"


def register() -> None:
    """Connect the signals and the monitor's tasks (from ``ResilienceConfig.ready``)."""
    user_logged_in.connect(_logged_in, dispatch_uid="staff_session_stamp")
    user_logged_out.connect(_logged_out, dispatch_uid="staff_session_logout")
    post_save.connect(_password_saved, sender=get_user_model(), dispatch_uid="staff_session_password")
    monitor_task_register(session_epochs_flush)
    monitor_task_register(session_epochs_share, needs_primary=False)
