"""Database settings from ``DATABASE_URL`` (libpq multi-host allowed) or the seed's discrete ``DB_*`` variables."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from resilience.config.reader import EnvReader

_POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}
_URL_HELP = "use postgres://user:password@host:5432/dbname (several hosts allowed: host1:5432,host2:5432)"


def parse_database_url(reader: EnvReader, name: str, url: str, connect_timeout: int) -> dict[str, Any] | None:
    """A libpq URL as a Django DATABASES entry (libpq options pass through), or None and an error."""
    parts = urlsplit(url)
    if parts.scheme not in _POSTGRES_SCHEMES or not parts.netloc or not parts.path.strip("/"):
        reader.error(name, f"not a PostgreSQL URL; {_URL_HELP}.")
        return None
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts: list[str] = []
    ports: list[str] = []
    for hostport in hostlist.split(","):
        host, port = hostport, ""
        if hostport.count(":") == 1:
            host, _, port = hostport.partition(":")
        if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            reader.error(name, f"host {hostport!r} is not host or host:port; {_URL_HELP}.")
            return None
        hosts.append(host)
        ports.append(port or "5432")
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    options.setdefault("connect_timeout", connect_timeout)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(user),
        "PASSWORD": unquote(password),
        "HOST": ",".join(hosts),
        "PORT": ",".join(ports),
        "OPTIONS": options,
    }


def _same_node(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["HOST"], a["PORT"], a["NAME"]) == (b["HOST"], b["PORT"], b["NAME"])


def read_databases(reader: EnvReader, connect_timeout: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The primary and the replicas; the URL wins over the discrete variables (with a warning)."""
    url = reader.raw("DATABASE_URL")
    host = reader.raw("DB_HOST") or reader.raw("DB_HOST_PRIMARY")
    port = str(reader.integer("DB_PORT", minimum=1, maximum=65535))
    discrete = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": reader.raw("DB_NAME") or "",
        "USER": reader.raw("DB_USERNAME") or "",
        "PASSWORD": reader.raw("DB_PASSWORD") or "",
        "PORT": port,
        "OPTIONS": {"connect_timeout": connect_timeout},
    }
    primary: dict[str, Any] | None = None
    if url:
        if host:
            reader.warning("DB_HOST", "ignored: DATABASE_URL is set too, and the URL wins.")
        primary = parse_database_url(reader, "DATABASE_URL", url, connect_timeout)
    elif host:
        for name, key in (("DB_NAME", "NAME"), ("DB_USERNAME", "USER")):
            if not discrete[key]:
                reader.error(name, "missing: DB_HOST is set, so DB_NAME and DB_USERNAME are needed too.")
        primary = {**discrete, "HOST": host}
    elif "DATABASE_URL_FILE" not in reader.environ:
        reader.error("DATABASE_URL", "missing. Give DATABASE_URL, or DB_HOST with DB_USERNAME, DB_PASSWORD, DB_NAME.")

    replicas: list[dict[str, Any]] = []
    replica_urls = reader.items("DATABASE_REPLICA_URLS")
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
        replica = {**primary, "HOST": replica_host, "PORT": port}
        if _same_node(replica, primary):
            reader.error("DB_HOST_REPLICA", "is the primary itself; name a replica.")
        else:
            replicas.append(replica)
    return primary, replicas
