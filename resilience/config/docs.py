"""Render the schema for people: the README's environment table and ``.env.example``.

``python -m resilience.config.docs example`` rewrites ``.env.example``; ``... readme`` rewrites the table
between the README's ``<!-- env-table -->`` markers. A test fails when either drifts from the schema.
"""

from __future__ import annotations

import sys

from core.docs import between_markers
from resilience.config.loader import PROJECT_ROOT
from resilience.config.schema import SCHEMA

_EXAMPLES = {
    "DATABASE_URL": "postgres://bulwark:password@127.0.0.1:5432/bulwark",
    "DATABASE_REPLICA_URLS": "postgres://bulwark:password@127.0.0.1:5433/bulwark",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTEL_EXPORTER_OTLP_ENDPOINTS": "http://127.0.0.1:4318",
    "ALLOWED_HOSTS": "shop.example.com",
    "PAYMENT_GATEWAY_URL": "http://127.0.0.1:8100",
}


def env_example() -> str:
    lines = [
        "# Bulwark environment. Generated from resilience/config/schema.py: do not edit by hand.",
        "# Every secret may also be given as NAME_FILE=/path/to/file. Durations: 15m, 24h, 7d or seconds.",
        "",
    ]
    for var in SCHEMA:
        lines.append(f"# {var.help} [{var.level}, area: {var.area}]")
        if var.secret and var.name not in _EXAMPLES:
            lines.append("# Generate: python -c 'import secrets; print(secrets.token_urlsafe(64))'")
        value = _EXAMPLES.get(var.name, var.default or "")
        prefix = "" if var.level in ("required", "recommended") else "# "
        lines.append(f"{prefix}{var.name}={value}")
    return "\n".join(lines) + "\n"


def env_table() -> str:
    rows = ["| Variable | Level | Default | Area | Meaning |", "|---|---|---|---|---|"]
    for var in SCHEMA:
        default = f"`{var.default}`" if var.default else ""
        secret = " Secret: also as `NAME_FILE`." if var.secret else ""
        rows.append(f"| `{var.name}` | {var.level} | {default} | {var.area} | {var.help}{secret} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str) -> str:
    """The README text with the environment table between its markers replaced by the current one."""
    return between_markers(readme, "env-table", env_table())


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "table"
    if what == "readme":
        readme = PROJECT_ROOT / "README.md"
        readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    elif what == "example":
        (PROJECT_ROOT / ".env.example").write_text(env_example(), encoding="utf-8")
    else:
        sys.stdout.write(env_table())
