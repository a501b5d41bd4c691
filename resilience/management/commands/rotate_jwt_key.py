"""``manage.py rotate_jwt_key``: rotate, stage, retire or revoke JWT signing keys, or list the ring.

Without options it rotates: the staged NEXT key (or a new HS256 key) becomes ACTIVE, the current one
PREVIOUS. Users stay logged in; every worker signs with the new key within about a second.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, ProgrammingError
from django.utils import timezone

from resilience.auth.keys import kid_for_secret
from resilience.auth.models import KeyAlgorithm
from resilience.auth.ring import RingUnavailableError, ring_cache
from resilience.auth.services import KeyRingError, key_retire, key_revoke, key_rotate, key_stage, keys_reencrypt


class Command(BaseCommand):
    help = (
        "Rotate the JWT signing key without logging anyone out (default), or --stage a NEXT key, "
        "--retire/--revoke a key by kid, --reencrypt stored secrets, --list the ring."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--stage", action="store_true", help="Create a NEXT key (published, not signing yet).")
        action.add_argument(
            "--retire", metavar="KID", help="Retire a NEXT key, or a PREVIOUS key whose tokens expired."
        )
        action.add_argument("--revoke", metavar="KID", help="Refuse every token the key signed, at once.")
        action.add_argument("--reencrypt", action="store_true", help="Re-encrypt secrets under the current SECRET_KEY.")
        action.add_argument("--list", action="store_true", help="Show the ring (no secrets) and exit.")
        parser.add_argument("--algorithm", choices=KeyAlgorithm.values, help="Algorithm of a new key (default HS256).")
        parser.add_argument("--reason", default="", help="Why; kept in the audit log.")

    def handle(self, *args: Any, **options: Any) -> None:
        reason = options["reason"] or "manage.py rotate_jwt_key"
        try:
            if options["list"]:
                self._list()
                return
            if options["stage"]:
                key = key_stage(algorithm=options["algorithm"] or KeyAlgorithm.HS256, reason=reason)
                self.stdout.write(f"staged {key.kid} ({key.algorithm}) as NEXT")
            elif options["retire"]:
                key = key_retire(kid=options["retire"], reason=reason)
                self.stdout.write(f"retired {key.kid}: its tokens are refused (key_retired)")
            elif options["revoke"]:
                key = key_revoke(kid=options["revoke"], reason=reason)
                self.stdout.write(f"revoked {key.kid}: every worker refuses its tokens within 2 s (key_revoked)")
            elif options["reencrypt"]:
                self.stdout.write(f"re-encrypted {keys_reencrypt()} stored secret(s) under the current SECRET_KEY")
            else:
                key = key_rotate(algorithm=options["algorithm"], reason=reason)
                self.stdout.write(
                    f"rotated: {key.kid} ({key.algorithm}) is ACTIVE; the previous key verifies until it retires"
                )
        except KeyRingError as exc:
            raise CommandError(str(exc)) from None
        except RingUnavailableError:
            raise CommandError(
                "The key ring cannot be read: no database node answers, or it is not migrated "
                "(`python manage.py migrate`). Verification keeps the ring it last read for 30 s."
            ) from None
        except ProgrammingError as exc:
            raise CommandError(
                f"The key ring's table is missing ({exc.__class__.__name__}): run `python manage.py migrate` first."
            ) from None
        except DatabaseError as exc:
            raise CommandError(
                f"The key ring could not be changed: the database primary is unavailable ({exc.__class__.__name__}). "
                "Signing keys change only on the primary; try again when it is back (`python -m devstack status`)."
            ) from None

    def _list(self) -> None:
        ring_cache.reset()
        ring = ring_cache.current()
        now = timezone.now()
        env_kids = {kid_for_secret(settings.BULWARK_CONFIG.jwt_secret): "JWT_SECRET"}
        if settings.BULWARK_CONFIG.jwt_secret_prev:
            env_kids[kid_for_secret(settings.BULWARK_CONFIG.jwt_secret_prev)] = "JWT_SECRET_PREV"
        self.stdout.write(f"{'kid':22} {'algorithm':9} {'state':9} {'source':16} retires at")
        for key in sorted(ring.by_kid.values(), key=lambda k: (k.status(now) != "active", k.kid)):
            marker = " (signs)" if ring.signer is key else ""
            source = env_kids.get(key.kid, key.source)
            retires = key.retire_after.isoformat(timespec="seconds") if key.retire_after else "-"
            self.stdout.write(f"{key.kid:22} {key.algorithm:9} {key.status(now):9} {source:16} {retires}{marker}")
