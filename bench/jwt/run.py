"""Run the JWT key-ring benchmark: verification with 1 key vs 5 keys in the ring, HS256 and EdDSA.

The run

1. builds a fresh devstack stack (``bench-jwt``, ports 61200-61202), points this process's Django at it (the
   same environment as a server: ``DJANGO_ENV=development``, primary + replica + Redis, random ``SECRET_KEY``
   and ``JWT_SECRET``), migrates it and creates one user;
2. builds four rings through the services an operator uses (``key_rotate``; for EdDSA ``key_stage`` then
   ``key_rotate(emergency=True)``): HS256 with 1 and with 5 database keys, EdDSA with 1 and with 5. With 5
   keys, the first four are PREVIOUS (still verifying) and the fifth ACTIVE. Every ring also holds the
   ``JWT_SECRET`` environment key (a PREVIOUS row after the first rotation): ``ring_build`` always adds it.
   Access tokens are issued with ``tokens_for_user``: one by the ACTIVE key and, in the 5-key rings, one by the
   oldest key while it was still ACTIVE. Each ring's rows are kept so it can be put back in the database;
3. checks, untimed, that each verification runs exactly one signature check, no SQL query and no ring read;
4. for ``--rounds`` rounds, measures the four rings in turn, ``--blocks`` times per round (1 and 5 keys of an
   algorithm side by side, their order and the algorithms' alternating, so drift on the shared machine
   spreads over them). In each block the ring's rows are written back and the ring cache reset, then
   - the ring refresh: refreshes right after ``ring_cache.reset()`` (cold: every key decrypted and loaded, as
     on a process's first read or when a key appears; ``--cold`` per round) and steady ones (what each worker
     does once a second: one query + build, the decrypted material cached; ``--refreshes`` per round);
   - verification: ``--calls`` calls per round per token of each of three paths, interleaved call by call, timed
     with ``time.perf_counter_ns``: ``jwt.decode`` with the token's key already in hand (the floor: PyJWT
     alone, which no ring size can change), ``KeyedTokenBackend.decode(raw)`` (header check, lookup by
     ``kid``, key state, PyJWT) and ``access_decode(raw)`` (simplejwt's token class on top). The ring refresh
     interval is raised for these loops so no database read lands in them (it is measured above);
5. takes the stack down.

Every timing is saved to ``bench/results/jwt-<time>/samples.json.gz`` (git-ignored) with ``meta.json``;
:mod:`bench.jwt.report` makes the tables and the plot. Everything started here is stopped again on success,
error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import gzip
import json
import logging
import os
import platform
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    add_common_args,
    announce_code,
    args_meta,
    command_line,
    fresh_stack,
    load_average,
    publish_run,
    run_bench,
    say,
)
from bench.jwt import report
from devstack import Stack

DOCS_PLOT = ROOT / "docs" / "bench" / "jwt_keys.png"
RINGS = (("HS256", 1), ("HS256", 5), ("EdDSA", 1), ("EdDSA", 5))
PATHS = ("pyjwt", "backend", "access_decode")
WARMUP_CALLS = 50  # per token and path, each time a ring is put back
NO_REFRESH_SECONDS = 3600.0  # the ring refresh interval inside the verification loops


@dataclass
class Ring:
    algorithm: str
    keys: int
    rows: list[Any] = field(default_factory=list)  # SigningKey instances, written back before each measurement
    tokens: dict[str, str] = field(default_factory=dict)  # signer ("active", "oldest") -> raw access token
    kids: dict[str, str] = field(default_factory=dict)  # signer -> kid
    entries: list[dict[str, Any]] = field(default_factory=list)  # the ring as verification sees it

    @property
    def name(self) -> str:
        return f"{self.algorithm}/{self.keys}"


def app_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The environment Django is set up with: what a server gets (as in bench.ratelimit), random secrets."""
    return {
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DJANGO_ENV": "development",
        "DOTENV_FILE": "none",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "DATABASE_URL": stack_env["DATABASE_URL"],
        "DATABASE_REPLICA_URLS": stack_env["DATABASE_REPLICA_URLS"],
        "REDIS_URL": stack_env["REDIS_URL"],
        "LOG_LEVEL": "WARNING",
    }


def django_setup(env: dict[str, str]) -> None:
    for name in [k for k in os.environ if k.startswith(("DATABASE_", "DB_", "REDIS_", "JWT_", "DJANGO_", "OTEL_"))]:
        del os.environ[name]
    os.environ.pop("LOG_DIR", None)
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings

    settings.BULWARK_DB_MONITOR = False  # no node-monitor thread in the measuring process
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def restore(ring: Ring) -> None:
    """Put this ring's rows back in the database and make the ring cache forget everything."""
    from resilience.auth.models import SigningKey
    from resilience.auth.ring import ring_cache

    SigningKey.objects.all().delete()
    SigningKey.objects.bulk_create([copy.copy(row) for row in ring.rows])
    ring_cache.reset()


def ring_entries() -> list[dict[str, Any]]:
    from django.utils import timezone

    from resilience.auth.ring import ring_cache

    now = timezone.now()
    return [
        {
            "kid": key.kid,
            "algorithm": key.algorithm,
            "state": key.state,
            "status": key.status(now),
            "source": key.source,
            "verifies": key.verifying is not None,
        }
        for key in ring_cache.current().by_kid.values()
    ]


def build(algorithm: str, keys: int, user: Any) -> Ring:
    """A ring of ``keys`` database keys made by rotations; the tokens of its ACTIVE and its oldest key."""
    from resilience.auth.backend import unverified_header
    from resilience.auth.models import SigningKey
    from resilience.auth.ring import ring_cache
    from resilience.auth.services import key_rotate, key_stage
    from resilience.auth.tokens import tokens_for_user
    from resilience.db.context import primary_reads

    SigningKey.objects.all().delete()
    ring_cache.reset()
    ring = Ring(algorithm, keys)
    for index in range(keys):
        if algorithm == "EdDSA":
            key_stage(algorithm="EdDSA", reason="bench.jwt")
            key_rotate(emergency=True, reason="bench.jwt")  # no JWT_JWKS_MAX_AGE wait in a benchmark
        else:
            key_rotate(reason="bench.jwt")
        if index == 0 and keys > 1:
            ring.tokens["oldest"] = tokens_for_user(user)["access"]
    ring.tokens["active"] = tokens_for_user(user)["access"]
    ring.kids = {signer: unverified_header(raw)["kid"] for signer, raw in ring.tokens.items()}
    with primary_reads():  # the replica may not have replayed the rotations yet
        ring.rows = list(SigningKey.objects.order_by("pk"))
    ring.entries = ring_entries()
    by_kid = {entry["kid"]: entry for entry in ring.entries}
    database_keys = [e for e in ring.entries if e["source"] == "database" and e["algorithm"] == algorithm]
    verifying = all(e["verifies"] and e["status"] in ("active", "previous") for e in ring.entries)
    if len(database_keys) != keys or not verifying:
        raise RuntimeError(f"ring {ring.name} is not as intended: {ring.entries}")
    if by_kid[ring.kids["active"]]["status"] != "active":
        raise RuntimeError(f"ring {ring.name}: the token's key is not the ACTIVE one")
    if keys > 1 and by_kid[ring.kids["oldest"]]["status"] != "previous":
        raise RuntimeError(f"ring {ring.name}: the oldest key is not PREVIOUS")
    return ring


@contextlib.contextmanager
def no_ring_refresh() -> Iterator[None]:
    from django.conf import settings
    from django.test.utils import override_settings

    with override_settings(BULWARK_JWT={**settings.BULWARK_JWT, "RING_REFRESH_SECONDS": NO_REFRESH_SECONDS}):
        yield


def verifiers(kid: str) -> dict[str, Callable[[str], Any]]:
    """The three paths for a token of ``kid``: PyJWT with the key in hand (the floor), the backend, access_decode."""
    import jwt

    from resilience.auth import tokens
    from resilience.auth.backend import REQUIRED_CLAIMS
    from resilience.auth.ring import ring_cache

    key = ring_cache.current().lookup(kid)
    assert key is not None
    backend = tokens._BACKEND
    algorithms, leeway = [key.algorithm], backend.get_leeway()
    options = {"require": [*REQUIRED_CLAIMS, "iss", "aud"]}

    def pyjwt(raw: str) -> Any:
        return jwt.decode(
            raw,
            key.verifying,
            algorithms=algorithms,
            audience=backend.audience,
            issuer=backend.issuer,
            leeway=leeway,
            options=options,
        )

    return {"pyjwt": pyjwt, "backend": backend.decode, "access_decode": tokens.access_decode}


def check(ring: Ring) -> dict[str, Any]:
    """Untimed: each verification runs one signature check, no SQL query and no ring read."""
    from unittest import mock

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from jwt.algorithms import HMACAlgorithm, OKPAlgorithm

    from resilience.auth.ring import ring_cache

    checks: list[str] = []

    def counting(original: Callable[..., bool]) -> Callable[..., bool]:
        def verify(self: Any, *args: Any, **kwargs: Any) -> bool:
            checks.append(type(self).__name__)
            return original(self, *args, **kwargs)

        return verify

    restore(ring)
    ring_cache.current()
    found: dict[str, Any] = {}
    with (
        no_ring_refresh(),
        mock.patch.object(HMACAlgorithm, "verify", counting(HMACAlgorithm.verify)),
        mock.patch.object(OKPAlgorithm, "verify", counting(OKPAlgorithm.verify)),
    ):
        for signer, raw in ring.tokens.items():
            for path, verify in verifiers(ring.kids[signer]).items():
                checks.clear()
                reads = ring_cache.reads
                with CaptureQueriesContext(connection) as queries:
                    for _ in range(10):
                        verify(raw)
                found[f"{signer}/{path}"] = {
                    "signature_checks_per_call": len(checks) / 10,
                    "queries": len(queries),
                    "ring_reads": ring_cache.reads - reads,
                }
    for name, seen in found.items():
        if seen != {"signature_checks_per_call": 1.0, "queries": 0, "ring_reads": 0}:
            raise RuntimeError(f"ring {ring.name}, {name}: {seen}")
    return found


def ring_order(round_no: int) -> list[tuple[str, int]]:
    """1 and 5 keys of one algorithm side by side, their order and the algorithms' alternating per round."""
    pairs = [[("HS256", 1), ("HS256", 5)], [("EdDSA", 1), ("EdDSA", 5)]]
    if round_no % 2:
        pairs = [pair[::-1] for pair in pairs]
    if (round_no // 2) % 2:
        pairs = pairs[::-1]
    return [item for pair in pairs for item in pair]


def measure_ring(ring: Ring, args: argparse.Namespace, shift: int, timings: dict[str, list[int]]) -> None:
    """One block of one ring: its rows written back, refreshes timed, then verifications timed call by call."""
    from resilience.auth.ring import ring_cache

    restore(ring)
    ring_cache.refresh(wait=True)  # first query on the fresh rows: plans, buffers
    reads = ring_cache.reads
    cold = timings.setdefault(f"refresh-cold/{ring.name}", [])
    for _ in range(args.cold // args.blocks):
        ring_cache.reset()
        started = time.perf_counter_ns()
        ring_cache.refresh(wait=True)
        cold.append(time.perf_counter_ns() - started)
    steady = timings.setdefault(f"refresh/{ring.name}", [])
    for _ in range(args.refreshes // args.blocks):
        started = time.perf_counter_ns()
        ring_cache.refresh(wait=True)
        steady.append(time.perf_counter_ns() - started)
    if ring_cache.reads - reads != args.cold // args.blocks + args.refreshes // args.blocks:
        raise RuntimeError("the ring was not read once per refresh")
    if len(ring_cache.current().by_kid) != len(ring.entries):
        raise RuntimeError(f"ring {ring.name}: {len(ring_cache.current().by_kid)} keys after the refresh")

    series = [(signer, path) for signer in ring.tokens for path in PATHS]
    series = series[shift % len(series) :] + series[: shift % len(series)]
    with no_ring_refresh():
        calls = {signer: verifiers(kid) for signer, kid in ring.kids.items()}
        jobs = [
            (calls[signer][path], ring.tokens[signer], timings.setdefault(f"verify/{ring.name}/{signer}/{path}", []))
            for signer, path in series
        ]
        reads = ring_cache.reads
        for verify, raw, _ in jobs:
            for _ in range(WARMUP_CALLS):
                verify(raw)
        gc.collect()
        clock = time.perf_counter_ns
        for _ in range(args.calls // args.blocks):
            for verify, raw, mine in jobs:
                started = clock()
                verify(raw)
                mine.append(clock() - started)
        if ring_cache.reads != reads:
            raise RuntimeError("the ring was read during verification")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import cryptography
    import django
    import jwt

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "pyjwt": jwt.__version__,
        "cryptography": cryptography.__version__,
        "django": django.get_version(),
    }


def measure(args: argparse.Namespace, stack: Stack, out: Path, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    env = app_env(fresh_stack(stack))
    say("django setup + migrate")
    django_setup(env)
    logging.getLogger("resilience.auth").setLevel(logging.ERROR)  # no line per rotation of the ring builds
    from django.contrib.auth import get_user_model
    from django.db import connections

    from resilience.db.context import RoutingState, routing

    cleanup.append(connections.close_all)  # before the stack goes down
    code = announce_code()
    # Run everything as inside a request (the routing middleware's state), as a worker refreshes its ring.
    with routing(RoutingState()):
        user = get_user_model().objects.create_user(username="bench-jwt", email="bench-jwt@example.com", password=None)
        rings = {f"{alg}/{keys}": build(alg, keys, user) for alg, keys in RINGS}
        checks = {name: check(ring) for name, ring in rings.items()}
        for ring in rings.values():
            say(
                f"ring {ring.name}: {len(ring.entries)} entries in by_kid "
                f"({', '.join(e['source'][:3] + ':' + e['algorithm'] + ':' + e['status'] for e in ring.entries)}); "
                "1 signature check, 0 queries, 0 ring reads per verification"
            )

        samples: dict[str, list[list[int]]] = {}
        order: list[list[str]] = []
        load_before = load_average()
        started = time.monotonic()
        for round_no in range(args.rounds):
            names = [f"{alg}/{keys}" for alg, keys in ring_order(round_no)]
            order.append(names)
            timings: dict[str, list[int]] = {}
            for block in range(args.blocks):  # the four rings in turn, several times per round
                for name in names:
                    measure_ring(rings[name], args, round_no + block, timings)
            for series, values in timings.items():
                samples.setdefault(series, []).append(values)
            say(f"round {round_no + 1}/{args.rounds} ({', '.join(names)}) in {time.monotonic() - started:.0f} s")
    load_after = load_average()
    measured_seconds = round(time.monotonic() - started, 1)
    connections.close_all()
    cleanup.remove(connections.close_all)
    stack.down()
    say(f"machine load average before {load_before}, after {load_after}")
    with gzip.open(out / "samples.json.gz", "wt") as f:
        json.dump(samples, f)
    meta = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": args_meta(args),
        "rings": {
            name: {"algorithm": r.algorithm, "keys": r.keys, "kids": r.kids, "entries": r.entries}
            for name, r in rings.items()
        },
        "checks": checks,
        "order": order,
        "measured_seconds": measured_seconds,
        "ring_refresh_seconds": 1.0,
        "loadavg": {"before": load_before, "after": load_after},
        "machine": machine(),
        "git": code,
        "command": command_line("bench.jwt"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def render(out: Path, publish: bool) -> None:
    publish_run(out, report, DOCS_PLOT, publish)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.jwt", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="rounds over the four rings (%(default)s)")
    p.add_argument("--calls", type=int, default=1600, help="timed calls per token and path per round (%(default)s)")
    p.add_argument("--blocks", type=int, default=4, help="blocks per ring per round, the rings in turn (%(default)s)")
    p.add_argument("--refreshes", type=int, default=100, help="steady ring refreshes per ring per round (%(default)s)")
    p.add_argument("--cold", type=int, default=12, help="cold ring refreshes per ring per round (%(default)s)")
    add_common_args(p, name="bench-jwt", port_base=61200, prefix="jwt", docs_plot=DOCS_PLOT)
    args = p.parse_args(argv)
    if not (
        1 <= args.rounds <= 50
        and 100 <= args.calls <= 50_000
        and 10 <= args.refreshes <= 2000
        and 1 <= args.cold <= 200
        and 1 <= args.blocks <= min(args.cold, 20)
    ):
        p.error(
            "keep it bounded: 1-50 rounds, 100-50000 calls, 10-2000 refreshes, 1-200 cold refreshes, "
            "1-20 blocks (at most one per cold refresh)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv), "jwt", measure, render)
