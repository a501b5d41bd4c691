"""The authentication area's health: the active key signs and verifies, its age, the ring's freshness.

It reads this process's copy of the ring (:mod:`resilience.auth.ring`) without touching the database; the
monitor's housekeeping thread keeps that copy fresh every second, from a replica while the primary is down. A
ring not re-read for ``RING_MAX_STALE_SECONDS`` is no longer trusted by requests (they answer 503), so it fails
here too. Authentication is a single point of failure right now when no key can sign.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import jwt
from django.conf import settings

from resilience.auth.keys import PREVIOUS, KeyRing, RingKey
from resilience.auth.ring import ring_cache
from resilience.config.reader import format_duration
from resilience.health.base import AreaCheck, AreaStatus, Component


def _sign_and_verify(key: RingKey) -> str:
    """A throwaway token signed and verified with ``key``: '' when it works, else what failed."""
    try:
        token = jwt.encode({"sub": "health-probe"}, key.signing, algorithm=key.algorithm, headers={"kid": key.kid})
        claims = jwt.decode(token, key.verifying, algorithms=[key.algorithm])
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if claims.get("sub") == "health-probe" else "verified claims differ from the signed ones"


def _key_age(key: RingKey, now: datetime) -> Component:
    max_age = settings.BULWARK_CONFIG.jwt_rotation_max_age
    if key.activated_at is None:
        return Component(
            "jwt",
            "keyAge",
            key.kid,
            "pass",
            output="an environment key (JWT_SECRET): its age is unknown; rotate_jwt_key moves signing to a tracked key",
        )
    age = now - key.activated_at
    overdue = age > max_age
    output = f"older than JWT_ROTATION_MAX_AGE ({format_duration(max_age)}): rotate it" if overdue else ""
    days = round(age.total_seconds() / 86400, 2)
    return Component("jwt", "keyAge", key.kid, "warn" if overdue else "pass", days, "d", output)


def ring_summary(ring: KeyRing, now: datetime) -> list[dict[str, object]]:
    """Every key of the ring as operators see it: kid, state now, source, age (the dashboard's table)."""
    rows = []
    for key in ring.by_kid.values():
        age = (now - key.activated_at).total_seconds() if key.activated_at else None
        rows.append(
            {
                "kid": key.kid,
                "state": key.status(now),
                "algorithm": key.algorithm,
                "source": key.source,
                "signing": ring.signer is not None and ring.signer.kid == key.kid,
                "age_seconds": round(age) if age is not None else None,
                "retires_at": key.retire_after.isoformat() if key.state == PREVIOUS and key.retire_after else None,
            }
        )
    return sorted(rows, key=lambda row: (not row["signing"], str(row["state"]), str(row["kid"])))


def authentication_status() -> AreaStatus:
    ring, since_read = ring_cache.peek()
    max_stale = settings.BULWARK_JWT["RING_MAX_STALE_SECONDS"]
    now = datetime.now(UTC)
    if ring is None:
        component = Component("jwt", "ring", "ring", "warn", output="not read yet by this worker (read on first use)")
        return AreaStatus("authentication", "signing keys not loaded yet in this worker", [component])
    components = [Component("jwt", "ring", "ring", "pass", round(since_read, 1), "s")]
    if since_read > max_stale:
        components[0] = Component(
            "jwt",
            "ring",
            "ring",
            "fail",
            round(since_read, 1),
            "s",
            f"not re-read for {since_read:.0f}s (limit {max_stale:g}s): sign-in answers 503 until a node answers",
        )
    signer = ring.signer
    if signer is None or signer.signing is None:
        components.append(Component("jwt", "sign", "none", "fail", output="no key can sign: sign-in is impossible"))
        return AreaStatus("authentication", "no signing key", components, at_risk=True, risk="nothing can issue tokens")
    problem = _sign_and_verify(signer)
    components.append(Component("jwt", "signVerify", signer.kid, "fail" if problem else "pass", output=problem))
    components.append(_key_age(signer, now))
    verifying = sum(1 for key in ring.by_kid.values() if key.verifying is not None and key.status(now) != "retired")
    if problem:
        return AreaStatus(
            "authentication", f"the active key {signer.kid} fails: {problem}", components, True, "tokens fail"
        )
    detail = f"{signer.kid} ({signer.algorithm}) signs; {verifying} key(s) verify; rotation keeps users signed in"
    return AreaStatus("authentication", detail, components)


@dataclasses.dataclass
class AuthenticationHealth(AreaCheck):
    area = "authentication"

    def assess(self) -> AreaStatus:
        return authentication_status()
