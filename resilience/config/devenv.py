"""Write or complete a development ``.env``: ``python -m resilience.config.devenv PATH [KEY=VALUE ...]``.

Generated secrets (SECRET_KEY, JWT_SECRET) and the given values are appended for every variable the
file does not have yet; nothing already in the file is ever overwritten, so a later version that adds
variables completes an old ``.env`` without touching the operator's edits.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from resilience.config.reader import read_dotenv

DEVELOPMENT_DEFAULTS = {"DJANGO_ENV": "development", "ALLOWED_HOSTS": "127.0.0.1,localhost"}


def generated_secrets() -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(64), "JWT_SECRET": secrets.token_urlsafe(48)}


def dotenv_complete(path: Path, values: dict[str, str]) -> list[str]:
    """Append each of ``values`` missing from the file; return the names appended."""
    present = read_dotenv(path)
    missing = {name: value for name, value in values.items() if name not in present}
    if missing:
        is_new = not path.exists()
        ends_open = not is_new and not path.read_bytes().endswith(b"\n") and path.stat().st_size > 0
        # Created 0600 from the first byte (os.open's mode): the file holds secrets.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8") as handle:
            if is_new:
                handle.write("# Development environment written by `make run`. Edit freely: it is never overwritten.\n")
            elif ends_open:
                handle.write("\n")  # the last line stays the operator's: the first new variable starts a line
            for name, value in missing.items():
                handle.write(f"{name}={value}\n")
    return list(missing)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m resilience.config.devenv PATH [KEY=VALUE ...]", file=sys.stderr)
        return 2
    path = Path(argv[0])
    given = dict(item.split("=", 1) for item in argv[1:] if "=" in item)
    appended = dotenv_complete(path, {**generated_secrets(), **DEVELOPMENT_DEFAULTS, **given})
    print(f"{path}: added {', '.join(appended)}" if appended else f"{path}: complete, nothing added")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
