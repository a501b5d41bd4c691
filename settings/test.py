"""Test settings: the real configuration, with a fast password hasher."""

from settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Unit tests set node states themselves; system tests run gunicorn with the real monitor.
BULWARK_DB_MONITOR = False
