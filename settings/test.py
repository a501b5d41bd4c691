"""Test settings: the real configuration, with a fast password hasher."""

import uuid

from settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Unit tests set node states themselves; system tests run gunicorn with the real monitor.
BULWARK_DB_MONITOR = False
# Rate limits off: the suite logs in and registers far more often than a client may. The rate-limit tests
# switch them on (override_settings(RATELIMIT_ENABLE=True)).
RATELIMIT_ENABLE = False
SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "bulwark.W002"]  # noqa: F405 - "limits off": on purpose, above
# The cache is the test stack's Redis: keys of this run never meet those of another run or of a server.
CACHES["default"]["KEY_PREFIX"] = f"bulwark-test-{uuid.uuid4().hex[:8]}"  # noqa: F405
