"""``manage.py staff_otp``: the staff second factor (django-otp), from the command line.

- ``enroll USER`` gives USER a confirmed TOTP device named "default" and prints its ``otpauth://`` URI and a QR
  code for the terminal, once: scan it with an authenticator app. An enrolled user is left as they are (it says
  so); ``--force`` replaces the device (the old codes stop working, the user's sessions end).
  ``--backup-codes N`` also replaces the user's backup codes with N new ones, printed once.
- ``reset USER`` removes every device of USER and ends their sessions (they log in look-only until enrolled again).
- ``list`` shows the staff, whether they may operate, and their devices (never a secret).

Enrolling and resetting write to the primary; with it down they say so and change nothing.
"""

from __future__ import annotations

import io
from typing import Any

import qrcode
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, ProgrammingError
from django.db.models import Q
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from resilience.dashboard.permissions import OPERATE_CONTROLS
from resilience.db.exceptions import ReadOnlyModeError
from resilience.staff.otp import otp_backup_codes, otp_devices_remove, otp_enroll

MAX_BACKUP_CODES = 20


class Command(BaseCommand):
    help = (
        "The staff second factor: `enroll USER` (prints the otpauth:// URI and a QR code once; --force replaces the "
        "device, --backup-codes N prints N one-time backup codes), `reset USER` (removes the devices, ends the "
        "sessions), `list`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{enroll,reset,list}")
        enroll = actions.add_parser("enroll", help="Enrol USER's authenticator app (TOTP).")
        enroll.add_argument("username", metavar="USER")
        enroll.add_argument("--force", action="store_true", help="Replace an existing TOTP device.")
        enroll.add_argument(
            "--backup-codes", type=int, default=0, metavar="N", help="Also replace USER's backup codes with N new ones."
        )
        enroll.add_argument("--no-qr", action="store_true", help="Print the URI only, without the terminal QR code.")
        reset = actions.add_parser("reset", help="Remove every device of USER and end their sessions.")
        reset.add_argument("username", metavar="USER")
        actions.add_parser("list", help="Staff, whether they may operate, and their devices.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            if action == "list":
                self._list()
            elif action == "reset":
                self._reset(self._user(options["username"]))
            else:
                self._enroll(self._user(options["username"]), **options)
        except ProgrammingError as exc:
            raise CommandError(
                f"The second factor's tables are missing ({exc.__class__.__name__}): run `python manage.py migrate` "
                "first."
            ) from None
        except DatabaseError as exc:
            why = str(exc) if isinstance(exc, ReadOnlyModeError) else exc.__class__.__name__
            raise CommandError(
                f"The second factor could not be changed: the database primary takes no writes now ({why}). "
                "Devices are stored on the primary; nothing changed. Try again when it is back "
                "(`python -m devstack status`)."
            ) from None

    def _user(self, username: str) -> AbstractBaseUser:
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(
                f"No user {username!r}: nothing changed. Check the spelling (`python manage.py staff_otp list` shows "
                "the staff) or create the account first (`python manage.py createsuperuser`)."
            )
        if not (user.is_staff or user.is_superuser):
            raise CommandError(
                f"{username!r} is not staff: the second factor guards the admin, which they cannot use. Nothing "
                "changed; make them staff first (admin → Users) if they should operate."
            )
        return user

    def _enroll(self, user: AbstractBaseUser, *, force: bool, backup_codes: int, no_qr: bool, **_: Any) -> None:
        if not 0 <= backup_codes <= MAX_BACKUP_CODES:
            raise CommandError(f"--backup-codes takes 0 to {MAX_BACKUP_CODES}; nothing changed.")
        username = user.get_username()
        device = otp_enroll(user=user, force=force, actor="manage.py staff_otp")
        if device is None:
            self.stdout.write(
                f"{username} is already enrolled (second factor kept; its secret is not shown again). Lost the "
                f"authenticator? `python manage.py staff_otp enroll {username} --force` replaces it."
            )
        else:
            uri = device.config_url
            self.stdout.write(
                self.style.SUCCESS(f"Second factor enrolled for {username}: add it to an authenticator app.")
            )
            self.stdout.write(f"otpauth URI (shown once): {uri}")
            if not no_qr:
                self.stdout.write(_terminal_qr(uri))
            self.stdout.write(
                "Log in at /admin/ with the 6-digit code the app shows; the controls need a session verified so."
            )
        if backup_codes:
            codes = otp_backup_codes(user=user, count=backup_codes)
            self.stdout.write(f"Backup codes for {username} (each works once; shown once; keep them offline):")
            for code in codes:
                self.stdout.write(f"  {code}")

    def _reset(self, user: AbstractBaseUser) -> None:
        removed = otp_devices_remove(user=user, actor="manage.py staff_otp")
        username = user.get_username()
        if removed:
            self.stdout.write(
                f"Removed {removed} second-factor device(s) of {username}; their sessions ended. They log in "
                f"look-only until enrolled again (`python manage.py staff_otp enroll {username}`)."
            )
        else:
            self.stdout.write(f"{username} had no second factor: nothing to remove.")

    def _list(self) -> None:
        user_model = get_user_model()
        users = user_model.objects.filter(Q(is_staff=True) | Q(is_superuser=True)).order_by(user_model.USERNAME_FIELD)
        totp = {d.user_id: d for d in TOTPDevice.objects.filter(confirmed=True)}
        backup: dict[int, int] = {}
        for device in StaticDevice.objects.filter(confirmed=True).prefetch_related("token_set"):
            backup[device.user_id] = backup.get(device.user_id, 0) + len(device.token_set.all())
        self.stdout.write(f"{'user':24} {'operate':8} {'totp':8} {'backup codes':13} last used")
        for user in users:
            device = totp.get(user.pk)
            operate = "yes" if user.is_active and user.has_perm(OPERATE_CONTROLS) else "no"
            last = device.last_used_at.isoformat(timespec="seconds") if device and device.last_used_at else "-"
            self.stdout.write(
                f"{user.get_username():24} {operate:8} {'yes' if device else 'no':8} {backup.get(user.pk, 0):<13} "
                f"{last}"
            )
        unenrolled = [
            user.get_username()
            for user in users
            if user.pk not in totp and not backup.get(user.pk) and user.is_active and user.has_perm(OPERATE_CONTROLS)
        ]
        if unenrolled:
            self.stdout.write(
                f"May operate but cannot until enrolled (look-only): {', '.join(unenrolled)} — "
                "`python manage.py staff_otp enroll USER`."
            )


def _terminal_qr(uri: str) -> str:
    """The URI as a QR code of block characters (qrcode's own terminal output), dark on light."""
    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()
