"""The seed's SPOF risk scorecard, from a health matrix: risk level, components, current status, target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resilience.config.schema import AREA_TITLES
from resilience.health.matrix import Matrix


@dataclass(frozen=True)
class RiskLevel:
    name: str
    areas: tuple[str, ...]
    target: int  # areas at risk the seed accepts at this level


# The seed's table: its target is 1/8 — one medium area (telemetry, with a single trace endpoint) may remain.
RISK_LEVELS = (
    RiskLevel("Critical", ("database", "authentication", "configuration"), 0),
    RiskLevel("Medium", ("logging", "telemetry", "serving"), 1),
    RiskLevel("Low", ("rateLimit", "circuitBreakers"), 0),
)
TARGET_SCORE = sum(level.target for level in RISK_LEVELS)


def scorecard_rows(matrix: Matrix) -> list[dict[str, Any]]:
    rows = []
    for level in RISK_LEVELS:
        at_risk = [area for area in level.areas if matrix.areas[area].at_risk]
        rows.append(
            {
                "level": level.name,
                "components": [AREA_TITLES[area] for area in level.areas],
                "areas": list(level.areas),
                "at_risk": at_risk,
                "current": f"{len(at_risk)}/{len(level.areas)} SPOFs",
                "target": f"{level.target}/{len(level.areas)} SPOFs",
                "on_target": len(at_risk) <= level.target,
            }
        )
    return rows


def critical_spofs(matrix: Matrix) -> list[str]:
    """Critical areas that are a single point of failure right now (a deploy gate refuses these)."""
    return [area for area in RISK_LEVELS[0].areas if matrix.areas[area].at_risk]
