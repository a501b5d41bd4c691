"""The configuration area's health: the environment passed validation (or nothing would run) and what its
warnings name. It reads the typed configuration loaded at start-up; nothing here can fail at run time."""

from __future__ import annotations

import dataclasses

from django.conf import settings

from resilience.health.base import AreaCheck, AreaStatus, Component


def configuration_status(check: AreaCheck) -> AreaStatus:
    config = settings.BULWARK_CONFIG
    components = [Component("config", "validation", "environment", "pass", "valid")]
    spof_warnings = [finding for finding in config.warnings if finding.spof]
    other = [finding for finding in config.warnings if not finding.spof]
    components.append(
        Component(
            "config",
            "spofWarnings",
            "environment",
            "pass",  # valid: what the warnings name is reported (and scored) in its own area
            len(spof_warnings),
            output="; ".join(str(finding) for finding in spof_warnings),
        )
    )
    for finding in other:
        components.append(Component("config", "warning", finding.name, "warn", output=finding.message))
    detail = check.config_report().detail
    if config.warnings:
        detail += f"; {len(config.warnings)} warning(s): " + ", ".join(finding.name for finding in config.warnings)
    return check.status_from_config(components, detail=detail)


@dataclasses.dataclass
class ConfigurationHealth(AreaCheck):
    area = "configuration"

    def assess(self) -> AreaStatus:
        return configuration_status(self)
