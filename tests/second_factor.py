"""The staff second factor, as the tests use it: TOTP codes computed from an enrolled secret (django-otp's own
``oath`` module, RFC 6238), the secret read back from the printed ``otpauth://`` URI, and a test client whose
session is verified (what the admin login does when the code is right)."""

from __future__ import annotations

import base64
import re
import time
from binascii import unhexlify
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP

STEP = 30
URI = re.compile(r"otpauth://totp/[^\s]+")


def code_for(key: bytes, *, at: float | None = None, step: int = STEP, digits: int = 6) -> str:
    """The TOTP code of ``key`` (raw bytes) at ``at`` (default now), zero-padded as an app shows it."""
    generator = TOTP(key, step=step, digits=digits)
    if at is not None:
        generator.time = at
    return str(generator.token()).zfill(digits)


def device_code(device, *, at: float | None = None) -> str:
    return code_for(unhexlify(device.key), at=at, step=device.step, digits=device.digits)


def uri_in(output: str) -> str:
    match = URI.search(output)
    assert match, f"no otpauth:// URI in:\n{output}"
    return match.group(0)


def key_from_uri(uri: str) -> bytes:
    """The raw secret of an ``otpauth://totp/...?secret=BASE32...`` URI."""
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def seconds_left_in_step(step: int = STEP) -> float:
    return step - time.time() % step


def verified_login(client, user, device) -> None:
    """``client.force_login(user)`` with the session verified by ``device`` (as after a login with its code)."""
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
