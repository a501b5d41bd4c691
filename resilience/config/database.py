"""Database settings from ``DATABASE_URL`` (libpq multi-host allowed) or the seed's discrete ``DB_*`` variables.

Messages about these URLs never quote them: they carry passwords.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from resilience.config.reader import EnvReader

_POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}
_URL_HELP = "use postgres://user:password@host:5432/dbname (several hosts allowed: host1:5432,host2:5432)"


def _split_host(hostport: str) -> tuple[str, str] | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port); None when malformed."""
    if hostport.startswith("["):
        host, sep, rest = hostport[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    elif ":" in hostport:
        return None
    else:
        host, port = hostport, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return host, port


def parse_database_url(reader: EnvReader, name: str, url: str, connect_timeout: int) -> dict[str, Any] | None:
    """A libpq URL as a Django DATABASES entry (libpq options pass through), or None and an error."""
    try:
        parts = urlsplit(url)
        options: dict[str, Any] = dict(parse_qsl(parts.query))
    except ValueError:
        parts, options = None, {}
    if parts is None or parts.scheme not in _POSTGRES_SCHEMES or not parts.path.strip("/"):
        reader.error(name, f"not a PostgreSQL URL; {_URL_HELP}.")
        return None
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts: list[str] = []
    ports: list[str] = []
    if hostlist:
        for hostport in hostlist.split(","):
            split = _split_host(hostport)
            if split is None:
                reader.error(name, f"a host in the URL is not host or host:port; {_URL_HELP}.")
                return None
            hosts.append(split[0])
            ports.append(split[1] or "5432")
    elif "host" in options:  # a Unix socket directory: postgres:///db?host=/var/run/postgresql
        hosts.append(options.pop("host"))
        ports.append(str(options.pop("port", "5432")))
    else:
        reader.error(name, f"the URL names no host; {_URL_HELP}.")
        return None
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
        split = _split_host(replica_host)
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
