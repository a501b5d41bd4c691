"""The limiter alone, in one process: ``resilience.ratelimit.policy.enforce`` timed call by call.

Run by :mod:`bench.ratelimit.run` with the server's environment (``python -m bench.ratelimit.inprocess MODE
CALLS OUT``) while the stack's Redis is up (``redis``), killed (``memory``) or with limits off (``off``); writes to OUT
``{"mode", "scopes": {name: [seconds, ...]}}`` as JSON. The first calls (which open the circuit in memory mode)
are a warm-up and not reported. HTTP, Django's middleware and the view are not in the figures: this is what
counting costs a request.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    mode, calls, out = argv[0], int(argv[1]), argv[2]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
    import django

    django.setup()
    from django.conf import settings
    from django.test import RequestFactory

    from resilience.ratelimit.policy import counts_in_memory, enforce

    settings.RATELIMIT_ENABLE = mode != "off"
    factory = RequestFactory()

    def a_request(n: int) -> object:
        # A new request object per call: the policy counts a request once (re-runs included) and remembers it on
        # the request, so timing the same object again would time that memo, not a count.
        return factory.get("/api/products/1/", REMOTE_ADDR=f"10.{n // 250 % 250}.{n % 250}.{1 + n % 200}")

    scopes = {"api": ["api"], "api+refresh": ["api", "refresh"]}
    for n in range(50):  # warm-up: connections, imports; in memory mode the circuit opens here
        enforce(a_request(n), ["api"])
    if mode != "off" and counts_in_memory() != (mode == "memory"):
        raise SystemExit(f"expected {mode} mode, the cache says otherwise")
    result: dict[str, list[float]] = {}
    for name, chosen in scopes.items():
        timings = []
        for n in range(calls):
            request = a_request(n % 1000)  # 1000 clients in turn
            started = time.perf_counter()
            enforce(request, chosen)
            timings.append(time.perf_counter() - started)
        result[name] = timings
    # To a file, not stdout: the app's log records (JSON too) go to stdout.
    Path(out).write_text(json.dumps({"mode": mode, "scopes": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
