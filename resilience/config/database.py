"""Database settings from ``DATABASE_URL`` (libpq multi-host allowed) or the seed's discrete ``DB_*`` variables.

A URL is parsed by django-environ's ``db_url_config`` behind Bulwark's libpq host pre-pass
(:meth:`resilience.config.env.BulwarkEnv.db_url_config`, :func:`resilience.config.env.libpq_url`): one port per
host, IPv6 hosts unbracketed, ``%2F`` socket directories decoded. Messages about these URLs never quote them:
they carry passwords.
"""

from __future__ import annotations

import re
from typing import Any

from resilience.config.env import BulwarkEnv, UrlProblem, split_host
from resilience.config.reader import EnvReader

# Replica URLs are comma-separated, and one URL may list several hosts with commas too: a new URL starts
# only where a scheme does.
_NEXT_URL = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_URL_HELP = "use postgres://user:password@host:5432/dbname (several hosts allowed: host1:5432,host2:5432)"
# Django settings that django-environ lifts out of a URL's query string (``Env._DB_BASE_OPTIONS``). Bulwark sets
# them itself in settings/base.py (persistent connections with health checks, autocommit, no request-wide
# transaction: checkout charges after its commit), so one given in the URL would be overridden or break that.
_DJANGO_OPTIONS = tuple(BulwarkEnv._DB_BASE_OPTIONS)


def parse_database_url(reader: EnvReader, name: str, url: str, connect_timeout: int) -> dict[str, Any] | None:
    """A libpq URL as a Django DATABASES entry (libpq options pass through), or None and an error."""
    try:
        entry = reader.env.db_url_config(url)
    except UrlProblem as problem:
        reader.error(name, f"{problem}; {_URL_HELP}.")
        return None
    given = [option.lower() for option in _DJANGO_OPTIONS if option in entry]
    if given:
        reader.error(
            name,
            f"the URL sets {', '.join(given)}, which Bulwark sets itself (persistent connections with health "
            f"checks, autocommit, no request-wide transaction); remove {'it' if len(given) == 1 else 'them'} "
            "from the URL.",
        )
        return None
    entry["OPTIONS"].setdefault("connect_timeout", connect_timeout)
    return entry


def _same_node(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["HOST"], a["PORT"], a["NAME"]) == (b["HOST"], b["PORT"], b["NAME"])


def _discrete_primary(reader: EnvReader, host: str, port: str, connect_timeout: int) -> dict[str, Any]:
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": reader.raw("DB_NAME") or "",
        "USER": reader.raw("DB_USERNAME") or "",
        "PASSWORD": reader.raw("DB_PASSWORD") or "",
        "HOST": host,
        "PORT": port,
        "OPTIONS": {"connect_timeout": connect_timeout},
    }
    for name, key in (("DB_NAME", "NAME"), ("DB_USERNAME", "USER")):
        if not entry[key]:
            reader.error(name, "missing: DB_HOST is set, so DB_NAME and DB_USERNAME are needed too.")
    return entry


def read_databases(reader: EnvReader, connect_timeout: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The primary and the replicas; the URL wins over the discrete variables (with a warning)."""
    url = reader.raw("DATABASE_URL")
    host = reader.raw("DB_HOST") or reader.raw("DB_HOST_PRIMARY")
    port = str(reader.integer("DB_PORT", minimum=1, maximum=65535))
    primary: dict[str, Any] | None = None
    if url:
        if host:
            reader.warning("DB_HOST", "ignored: DATABASE_URL is set too, and the URL wins.")
        primary = parse_database_url(reader, "DATABASE_URL", url, connect_timeout)
    elif host:
        primary = _discrete_primary(reader, host, port, connect_timeout)
    elif not reader.missing_reported("DATABASE_URL"):
        reader.error("DATABASE_URL", "missing. Give DATABASE_URL, or DB_HOST with DB_USERNAME, DB_PASSWORD, DB_NAME.")

    replicas: list[dict[str, Any]] = []
    listed = reader.raw("DATABASE_REPLICA_URLS")
    replica_urls = [url.strip() for url in _NEXT_URL.split(listed) if url.strip()] if listed else []
    for index, replica_url in enumerate(replica_urls, start=1):
        parsed = parse_database_url(reader, "DATABASE_REPLICA_URLS", replica_url, connect_timeout)
        if parsed and primary and _same_node(parsed, primary):
            reader.error("DATABASE_REPLICA_URLS", f"entry {index} is the primary itself; name a replica.")
        elif parsed:
            replicas.append(parsed)
    replica_host = reader.raw("DB_HOST_REPLICA")
    if replica_host and replica_urls:
        reader.warning("DB_HOST_REPLICA", "ignored: DATABASE_REPLICA_URLS is set too, and the URLs win.")
    elif replica_host and primary:
        split = split_host(replica_host)
        if split is None:
            reader.error("DB_HOST_REPLICA", f"{replica_host!r} is not host or host:port.")
        else:
            # The seed's replica shares the primary's credentials and, unless it says otherwise, its port.
            replica = {**primary, "HOST": split[0], "PORT": split[1] or str(primary["PORT"]).split(",")[0]}
            if _same_node(replica, primary):
                reader.error("DB_HOST_REPLICA", "is the primary itself; name a replica.")
            else:
                replicas.append(replica)
    return primary, replicas
