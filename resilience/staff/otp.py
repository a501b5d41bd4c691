"""The staff second factor (django-otp: TOTP, and static backup codes), verified so that it keeps working while the
primary or Redis is down, and the services that enrol and remove it.

Who needs it: every path that changes a control or a key (the dashboard's controls, the operator-control and
signing-key admin pages and their actions, the second-factor admin itself) goes through
:func:`resilience.dashboard.permissions.may_operate`, which wants ``resilience.operate_controls`` **and** a session
verified by a confirmed device (``request.user.is_verified()``, django-otp's middleware) — superusers included.
The admin login (:mod:`resilience.staff.forms`) asks for the code whenever the account has a confirmed device; an
account without one logs in look-only. The step-up page ``/admin/otp/verify/`` (:mod:`resilience.staff.otp_views`)
verifies a session that logged in without it.

One attempt, :func:`otp_verify`:

1. **Counted first** by Bulwark's limiter, scope ``otp`` per user (``RATELIMIT_OTP``, default 10/m; in Redis,
   shared by the fleet; in memory each worker allows its share): over the limit the attempt is refused, a correct
   code included, before any device is read. django-otp's own throttle (a failure count on the device row) applies
   on top while the primary takes its writes; losing it in an outage opens no brute-force window. Like every limit
   it is off with ``RATELIMIT_ENABLED=false``.
2. The user's confirmed devices are read through the router (a replica while the primary is down). A code of a TOTP
   device's length, all digits, is tried on the TOTP devices; anything else on the backup-code devices (a backup
   code never counts as a failure against the authenticator, nor the other way round).
3. **TOTP**: the step floor — the highest step used, from the cache and this process's memory — is raised into
   the device's ``last_t`` before django-otp's ``TOTPDevice.verify_token``, whose saves (``last_t``, drift,
   throttle) are made best-effort (:func:`resilience.db.bookkeeping.best_effort`); the accepted step is then
   claimed (an atomic ``add`` in the cache, and memory) and the floor raised.
4. **Backup code**: the token row is looked up, claimed (an atomic ``add`` in the cache, and memory: a code
   claimed before is refused), deleted best-effort and — when the delete fails — queued in this process and
   deleted by the node monitor once the primary is back (:func:`otp_deferred_flush`). django-otp's
   ``StaticDevice.verify_token`` deletes inside itself, which cannot be made best-effort, so these steps replace
   it; its throttle methods are used as they are. A used code met again while the primary answers is deleted then.

Enrolments, new backup codes, removals, refused codes and limited attempts are resilience events
(``staff_otp_enrolled``, ``staff_otp_backup_codes``, ``staff_otp_reset``, ``staff_otp_failed``,
``staff_otp_rate_limited``); a removal also ends the user's sessions (:mod:`resilience.staff.sessions`).

While the primary answers, the device row is locked for the attempt (``select_for_update``, as django-otp does),
so two concurrent uses of one code are also serialized by the database.

When a dependency fails:

- **Primary down**: verification reads the devices from a replica and works; its writes are skipped (logged
  ``db_bookkeeping_skipped``). A used TOTP step and a used backup code are refused by the cache (every worker) and
  this process's memory, whatever the replica still holds; the backup code's row is deleted when the primary is
  back. A worker restarted during the outage forgets its queued deletions: the cache still refuses those codes
  (for :data:`STATIC_USED_TTL_SECONDS`), and their first use once the primary answers deletes them.
- **Redis down**: the cache answers from this process's memory; the primary keeps ``last_t`` and deletes the used
  codes, so nothing is reused. The ``otp`` limit is counted per worker (each allows its share).
- **Both down**: only this process's memory remembers: a code may be used once more on *another* worker (each
  worker refuses a second use of what it saw itself). Each verification accepted in that state is counted
  (``bulwark_staff_otp_unguarded_total``) and logged.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache, caches
from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import devices_for_user
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from prometheus_client import Counter

from resilience.cache import FallbackCache
from resilience.db.bookkeeping import best_effort
from resilience.db.nodes import registry
from resilience.events import event_record
from resilience.ratelimit import policy
from resilience.ratelimit.exceptions import RateLimitedError

logger = logging.getLogger("resilience.staff")

SCOPE = "otp"
KEY_PREFIX = "staff:otp:"
USED_STEP_TTL_SECONDS = 3600  # a TOTP step claim: far longer than any code stays valid (step x tolerance, drift)
STATIC_USED_TTL_SECONDS = 30 * 24 * 3600  # a used backup code's mark, in case its row outlives the outage
MEMORY_MAX = 10_000  # claims this process remembers (the oldest are forgotten first)
DEFERRED_MAX = 10_000  # backup-code rows waiting for the primary to be deleted, per process
TOTP_DEVICE_NAME = "default"
BACKUP_DEVICE_NAME = "backup codes"

ASK_FOR_CODE = "Enter the code from your authenticator app (or one of your backup codes)."
CODE_REFUSED = "That code is not valid (or was already used). Enter the current code from your authenticator app."
NO_DEVICE = (
    "This account has no second factor. Enrol one to operate: an operator runs "
    "`python manage.py staff_otp enroll {username}` and scans the code it prints."
)
THROTTLED = "Too many wrong codes in a row: second-factor checks are paused for {seconds} s. Try again then."
UNREADABLE = "Your second factor cannot be read right now (no database node answers): try again in a moment."

UNGUARDED = Counter(
    "bulwark_staff_otp_unguarded_total",
    "Second-factor codes accepted with the primary and Redis both down (a reuse on another worker cannot be seen)",
)


class OTPRefused(Exception):
    """The attempt did not verify the user; ``message`` says why, for the staff member."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsedCodes:
    """What was used: TOTP steps per device and backup codes, in the shared cache and this process's memory; and
    the backup-code rows whose delete waits for the primary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: OrderedDict[str, float] = OrderedDict()  # claim key -> expiry (unix time)
        self._floors: dict[int, int] = {}  # TOTP device pk -> highest step used here
        self._deferred: deque[int] = deque()  # StaticToken pks

    # ---- TOTP ---------------------------------------------------------------------------------------------------

    def totp_floor(self, device_pk: int) -> int:
        """The highest step used on this device that the cache or this process knows of (-1: none)."""
        with self._lock:
            here = self._floors.get(device_pk, -1)
        shared = cache.get(f"{KEY_PREFIX}totp-floor:{device_pk}")
        return max(here, shared if isinstance(shared, int) else -1)

    def totp_claim(self, device_pk: int, step: int) -> bool:
        """Record the use of ``step``; False when it was used before (here, or anywhere the cache can tell)."""
        if not self._claim_here(f"totp:{device_pk}:{step}", USED_STEP_TTL_SECONDS):
            return False
        with self._lock:
            self._floors[device_pk] = max(self._floors.get(device_pk, -1), step)
        if not cache.add(f"{KEY_PREFIX}totp:{device_pk}:{step}", 1, USED_STEP_TTL_SECONDS):
            return False
        floor_key = f"{KEY_PREFIX}totp-floor:{device_pk}"
        shared = cache.get(floor_key)
        if not isinstance(shared, int) or shared < step:
            cache.set(floor_key, step, USED_STEP_TTL_SECONDS)
        return True

    # ---- backup codes -------------------------------------------------------------------------------------------

    def static_claim(self, token_pk: int) -> bool:
        """Mark a backup code used; False when it was marked before (here, or anywhere the cache can tell)."""
        if not self._claim_here(f"static:{token_pk}", STATIC_USED_TTL_SECONDS):
            return False
        return bool(cache.add(f"{KEY_PREFIX}static:{token_pk}", 1, STATIC_USED_TTL_SECONDS))

    def defer_delete(self, token_pk: int) -> None:
        """Queue a used code's row for deletion once the primary is back (the oldest dropped, logged, when full)."""
        with self._lock:
            if len(self._deferred) >= DEFERRED_MAX:
                dropped = self._deferred.popleft()
                logger.error(
                    "deferred backup-code deletions full (%d): dropped token %s (the cache still refuses it)",
                    DEFERRED_MAX,
                    dropped,
                    extra={"event": "staff_otp_deferred_dropped", "token": dropped},
                )
            self._deferred.append(token_pk)

    def pending(self) -> int:
        with self._lock:
            return len(self._deferred)

    def flush(self) -> int:
        """Delete the queued backup-code rows (primary needed); how many were deleted. Rows that could not be
        deleted stay queued, in order."""
        deleted = 0
        while True:
            with self._lock:
                if not self._deferred:
                    return deleted
                token_pk = self._deferred[0]
            try:
                StaticToken.objects.filter(pk=token_pk).delete()
            except DatabaseError as exc:
                logger.info("deferred backup-code deletion not done yet: %s", exc)
                return deleted
            deleted += 1
            with self._lock:
                if self._deferred and self._deferred[0] == token_pk:
                    self._deferred.popleft()

    # ---- tests --------------------------------------------------------------------------------------------------

    def forget_memory(self) -> None:
        """Forget this process's claims (tests: another worker's view); the queue stays."""
        with self._lock:
            self._claims.clear()
            self._floors.clear()

    def reset(self) -> None:
        with self._lock:
            self._claims.clear()
            self._floors.clear()
            self._deferred.clear()

    def _claim_here(self, key: str, ttl: float) -> bool:
        now = time.time()
        with self._lock:
            if self._claims.get(key, 0.0) > now:
                return False
            self._claims[key] = now + ttl
            self._claims.move_to_end(key)
            while self._claims and (len(self._claims) > MEMORY_MAX or next(iter(self._claims.values())) <= now):
                self._claims.popitem(last=False)
        return True


used_codes = UsedCodes()


def otp_deferred_flush() -> None:
    """The node monitor's task while the primary answers: delete the backup codes used during an outage."""
    if used_codes.pending():
        deleted = used_codes.flush()
        if deleted:
            logger.info(
                "deleted %d backup code(s) used while the primary was down",
                deleted,
                extra={"event": "staff_otp_deferred_flushed"},
            )
        connections.close_all()  # this runs in the monitor's thread: no request end closes its connections


# ---- verification ---------------------------------------------------------------------------------------------


def otp_verify(request: HttpRequest, user: AbstractBaseUser, token: str | None) -> Device:
    """Verify ``token`` for ``user`` (signed in, or just authenticated by the login form's password); the device
    that accepted it, or :class:`OTPRefused`. Does not mark the session: the caller does (``django_otp.login``, or
    ``user.otp_device`` before ``auth.login``)."""
    token = "".join((token or "").split()).lower()
    if not token:
        raise OTPRefused(ASK_FOR_CODE, code="token_required")
    django_request = getattr(request, "_request", request)
    memo: dict[tuple[Any, str], Device] = django_request.__dict__.setdefault("_staff_otp_verified", {})
    if (user.pk, token) in memo:  # the database middleware re-ran this request: the code was already accepted
        return memo[(user.pk, token)]
    _limit(request, user)
    devices = _devices(user)
    if not devices:
        raise OTPRefused(NO_DEVICE.format(username=user.get_username()), code="no_device")
    candidates = _candidates(devices, token)
    _throttled(candidates)
    for device in candidates:
        if _verify_device(device, token):
            memo[(user.pk, token)] = device
            return device
    event_record(
        "staff_otp_failed",
        severity="warning",
        subject=user.get_username(),
        message=f"second-factor code refused for {user.get_username()}",
        detail={"user_id": user.pk},
    )
    raise OTPRefused(CODE_REFUSED, code="invalid_token")


def user_has_confirmed_device(user: AbstractBaseUser) -> bool:
    """Whether ``user`` has a confirmed device (read through the router); False when no node can tell."""
    try:
        return bool(_devices(user))
    except OTPRefused:
        return False


def _limit(request: HttpRequest, user: AbstractBaseUser) -> None:
    try:
        policy.enforce(request, [SCOPE], keys={SCOPE: f"user:{user.pk}"})
    except RateLimitedError as exc:
        retry = (exc.detail or {}).get("retry_after", 60)
        event_record(
            "staff_otp_rate_limited",
            severity="warning",
            subject=user.get_username(),
            message=f"second-factor attempts for {user.get_username()} over the limit",
            detail={"user_id": user.pk, "retry_after": retry},
        )
        raise OTPRefused(
            f"Too many second-factor attempts for this account: try again in {retry} s.", code="rate_limited"
        ) from exc


def _devices(user: AbstractBaseUser) -> list[Device]:
    try:
        return list(devices_for_user(user, confirmed=True))
    except DatabaseError as exc:
        logger.warning("second-factor devices of %s unreadable: %s", user.get_username(), exc)
        raise OTPRefused(UNREADABLE, code="unavailable") from exc


def _throttled(candidates: list[Device]) -> None:
    """Refuse at once, saying how long to wait, when django-otp's throttle pauses every device the code could be
    for (after failed codes; as the device rows say, a replica's while the primary is down)."""
    waits = []
    for device in candidates:
        allowed, extra = device.verify_is_allowed()
        if allowed:
            return
        locked_until = (extra or {}).get("locked_until")
        waits.append(max(1, math.ceil((locked_until - timezone.now()).total_seconds())) if locked_until else 1)
    if waits:
        raise OTPRefused(THROTTLED.format(seconds=min(waits)), code="throttled")


def _candidates(devices: list[Device], token: str) -> list[Device]:
    totp = [d for d in devices if isinstance(d, TOTPDevice) and token.isdigit() and len(token) == d.digits]
    return totp or [d for d in devices if isinstance(d, StaticDevice)]


def _verify_device(device: Device, token: str) -> bool:
    check: Callable[[Any, str], bool] = _totp_check if isinstance(device, TOTPDevice) else _static_check
    if registry().primary_available():
        decided: list[bool] = []
        try:
            with transaction.atomic():
                locked = type(device).objects.select_for_update().filter(pk=device.pk).first()
                if locked is None:
                    return False  # removed meanwhile
                decided.append(check(locked, token))
            return decided[0]
        except DatabaseError as exc:
            if decided:  # decided, and claimed in the cache, before the commit failed: the claim stands
                return decided[0]
            logger.info("second factor checked without the primary's lock: %s", exc)
    return check(device, token)


class _Saves:
    def __init__(self) -> None:
        self.failed = False


@contextmanager
def _best_effort_saves(device: Device) -> Iterator[_Saves]:
    """Within: ``device.save()`` is best-effort (django-otp's verify methods save the device themselves)."""
    saves = _Saves()

    def save(*args: Any, **kwargs: Any) -> None:
        done = best_effort(
            f"otp device {device.persistent_id}", lambda: type(device).save(device, *args, **kwargs) or 1
        )
        if done is None:
            saves.failed = True

    device.save = save  # type: ignore[method-assign]
    try:
        yield saves
    finally:
        del device.save


def _totp_check(device: TOTPDevice, token: str) -> bool:
    floor = used_codes.totp_floor(device.pk)
    if floor > device.last_t:
        device.last_t = floor  # a step used while the primary could not store it (or a replica not caught up)
    with _best_effort_saves(device) as saves:
        if not device.verify_token(token):
            return False
    if not used_codes.totp_claim(device.pk, device.last_t):
        return False  # the same step, used at the same moment on another worker
    _note_unguarded(device, saves)
    return True


def _static_check(device: StaticDevice, token: str) -> bool:
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        return False
    match = device.token_set.filter(token=token).first()
    with _best_effort_saves(device) as saves:
        if match is None or not used_codes.static_claim(match.pk):
            if match is not None and registry().primary_available():
                best_effort("otp used backup code", match.delete)  # used before; its deletion had not landed
            device.throttle_increment(commit=True)
            return False
        if best_effort("otp backup code", match.delete) is None:
            used_codes.defer_delete(match.pk)
            saves.failed = True
        device.throttle_reset(commit=False)
        device.set_last_used_timestamp(commit=True)
    _note_unguarded(device, saves)
    return True


def _note_unguarded(device: Device, saves: _Saves) -> None:
    store = caches["default"]
    shared = isinstance(store, FallbackCache) and not store.uses_memory()
    if saves.failed and not shared:
        UNGUARDED.inc()
        logger.warning(
            "second factor of user %s accepted with the primary and Redis both down: another worker cannot see "
            "this use",
            device.user_id,
            extra={"event": "staff_otp_unguarded", "user_id": device.user_id},
        )


# ---- enrolment and removal ------------------------------------------------------------------------------------


def otp_enroll(
    *,
    user: AbstractBaseUser,
    force: bool = False,
    name: str = TOTP_DEVICE_NAME,
    actor: AbstractBaseUser | str | None = None,
) -> TOTPDevice | None:
    """Give ``user`` a confirmed TOTP device (primary needed); None when they have one and ``force`` is off. With
    ``force`` their TOTP devices are replaced, which ends their sessions."""
    with transaction.atomic():  # on the primary, the user's row locked: a lagging replica never decides this
        type(user).objects.select_for_update().filter(pk=user.pk).first()
        if not force and TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            return None
        removed, _ = TOTPDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
    if removed:
        _end_sessions(user, actor)
    event_record(
        "staff_otp_enrolled",
        subject=user.get_username(),
        message=f"TOTP second factor {'replaced' if removed else 'enrolled'} for {user.get_username()}",
        detail={"user_id": user.pk, "replaced": bool(removed)},
    )
    return device


def otp_backup_codes(*, user: AbstractBaseUser, count: int) -> list[str]:
    """Replace ``user``'s backup codes with ``count`` new ones (primary needed); the codes, to show once."""
    codes = [StaticToken.random_token() for _ in range(count)]
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(user=user, name=BACKUP_DEVICE_NAME, defaults={"confirmed": True})
        if not device.confirmed:
            device.confirmed = True
            device.save(update_fields=["confirmed"])
        device.token_set.all().delete()
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    event_record(
        "staff_otp_backup_codes",
        subject=user.get_username(),
        message=f"{count} new backup code(s) for {user.get_username()}",
        detail={"user_id": user.pk, "count": count},
    )
    return codes


def otp_devices_remove(
    *, user: AbstractBaseUser, devices: list[Device] | None = None, actor: AbstractBaseUser | str | None = None
) -> int:
    """Remove ``devices`` of ``user`` (all of them by default; primary needed) and end the user's sessions; how
    many were removed."""
    removed = 0
    with transaction.atomic():
        if devices is None:
            for model in (TOTPDevice, StaticDevice):
                removed += model.objects.filter(user=user).count()
                model.objects.filter(user=user).delete()
        else:
            for device in devices:
                if device.user_id == user.pk:
                    device.delete()
                    removed += 1
    if removed:
        _end_sessions(user, actor)
        event_record(
            "staff_otp_reset",
            subject=user.get_username(),
            message=f"second factor of {user.get_username()} removed ({removed} device(s))",
            detail={"user_id": user.pk, "removed": removed, "by": _actor_name(actor)},
        )
    return removed


def _actor_name(actor: AbstractBaseUser | str | None) -> str:
    if actor is None:
        return ""
    return actor if isinstance(actor, str) else actor.get_username()


def _end_sessions(user: AbstractBaseUser, actor: AbstractBaseUser | str | None = None) -> bool:
    """End every session of ``user`` (their session epoch, :mod:`resilience.staff.sessions`, when installed)."""
    if importlib.util.find_spec("resilience.staff.sessions") is None:
        return False
    from resilience.staff.sessions import session_epoch_bump

    session_epoch_bump(user=user, reason="second factor removed", actor=actor)
    return True
