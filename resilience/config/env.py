"""django-environ, with Bulwark's rules: :class:`BulwarkEnv` reads every variable, :func:`dotenv_read` the ``.env``.

What is django-environ's here (0.14.0): the ``NAME_FILE`` lookup (:class:`environ.FileAwareMapping`; the file
wins over ``NAME``), the casts that are exact (``int``, the ``bool`` of an accepted word, ``list``, ``urlparse``),
the database URL parser (:meth:`environ.Env.db_url_config`: user, password, name, query options, engine) and the
``.env`` line parser (:meth:`environ.Env.read_env`).

What is Bulwark's, each because django-environ 0.14 does otherwise:

* Values are literal. ``Env.get_value`` reads a value that starts with ``$`` as the name of another variable:
  ``$abc$def`` becomes a lookup of ``abc$def`` whose error message quotes the rest of the value, and with a
  default it silently returns the default. Generated secrets contain ``$`` and 0.14 has no switch (``interpolate``
  came in 0.11.0 and went in 0.11.1; ``escape_proxy`` only unescapes ``\\$``), so :meth:`BulwarkEnv.get_value` is
  ``Env.get_value`` without that step (and without the ``scheme``/``prefix`` machinery: the schema casts).
* ``NAME_FILE`` (:class:`FileAwareEnviron`): the file's final newline is not part of the value (``echo s > f``
  writes one); a missing or unreadable file reads as absent and is kept in ``problems``, so the reader reports it
  as a finding with every other problem (django-environ raises ``FileNotFoundError``); a blank ``NAME_FILE``
  means not given.
* Database URLs (:meth:`BulwarkEnv.db_url_config`): the *libpq host pre-pass* :func:`libpq_url` splits the host
  list as libpq does and hands django-environ a URL with a port on every host, because django-environ joins only
  the ports that are present (``h1,h2:5433`` would give ``PORT='5433'``, which libpq applies to both hosts); its
  host list then replaces django-environ's ``HOST``, because django-environ keeps IPv6 brackets in a list
  (``[::1],[::1]`` does not resolve) and does not decode a ``%2F``-encoded socket directory given as the only
  host. Only PostgreSQL URLs with a database name get as far as django-environ, whose leniency would otherwise
  let ``mysql://`` through, or warn about a scheme-less URL with its password in the warning.
* ``.env`` (:func:`dotenv_read`): parsed by ``read_env`` into a private dict, never ``os.environ``; the file is
  read here (a file that cannot be read is a problem, not a silent no-op); a line ``read_env`` cannot parse is
  reported by its number (``problem``), and the ``Invalid line: …`` record that would print it (a line such as
  ``JWT_SECRET = x`` holds a secret) is dropped by a filter on django-environ's logger.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import environ
from environ.fileaware_mapping import FileAwareMapping

POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "pgsql"})
LIBPQ_DEFAULT_PORT = "5432"


class FileAwareEnviron(FileAwareMapping):
    """django-environ's ``NAME_FILE`` mapping over a given environment, with Bulwark's three changes (module doc)."""

    def __init__(self, environ_: Mapping[str, str]) -> None:
        # A NAME_FILE path is stripped, so a blank one means "not given" (django-environ would open "  ").
        stripped = {key: value.strip() if key.endswith("_FILE") else value for key, value in environ_.items()}
        super().__init__(env=stripped)
        self.problems: dict[str, str] = {}  # name -> why its NAME_FILE could not be read (a path, never a value)

    def file_of(self, name: str) -> str | None:
        """The path ``NAME_FILE`` gives, or None."""
        return self.env.get(f"{name}_FILE") or None

    def __getitem__(self, key: str) -> str:
        path = self.file_of(key)
        if path is None:
            return self.env[key]
        if key in self.problems:
            raise KeyError(key)
        try:
            value = super().__getitem__(key)
        except UnicodeDecodeError:
            self.problems[key] = f"cannot read {path} (not UTF-8 text); give a readable text file."
            raise KeyError(key) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            self.problems[key] = f"cannot read {path} ({why}); give a readable text file."
            raise KeyError(key) from None
        return value.removesuffix("\n").removesuffix("\r")


class UrlProblem(ValueError):
    """A database URL Bulwark refuses; the message never quotes the URL (it carries a password)."""


class BulwarkEnv(environ.Env):
    """The one ``environ.Env`` through which Bulwark reads every variable: literal values, :class:`FileAwareEnviron`."""

    def __init__(self, environ_: Mapping[str, str]) -> None:
        super().__init__()
        self.ENVIRON = FileAwareEnviron(environ_)
        self.smart_cast = False  # the schema says how each variable is cast

    @property
    def file_problems(self) -> dict[str, str]:
        return self.ENVIRON.problems

    def from_file(self, name: str) -> bool:
        return self.ENVIRON.file_of(name) is not None

    def get_value(
        self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default: bool = False
    ) -> Any:
        """``Env.get_value`` without its ``$`` proxy step: the value is taken literally (see the module doc)."""
        try:
            value = self.ENVIRON[var]
        except KeyError:
            if default is self.NOTSET:
                raise environ.ImproperlyConfigured(f"Set the {var} environment variable") from None
            value = default
        if default is None and value == "":
            value = None
        if value is not default or (parse_default and value is not None):
            value = self.parse_value(value, cast)
        return value

    @classmethod
    def db_url_config(cls, url: Any, engine: str | None = None) -> dict[str, Any]:
        """``Env.db_url_config`` of a PostgreSQL URL after the libpq host pre-pass; :class:`UrlProblem` otherwise.

        Returns the Django ``DATABASES`` entry with ``HOST`` and ``PORT`` as comma-separated strings (one port per
        host) and ``OPTIONS`` always present. A URL without hosts may name a socket directory as ``?host=``.
        """
        canonical, hosts = libpq_url(str(url))
        with warnings.catch_warnings():
            # Its warnings quote the parsed URL, password included: as errors they are caught, and never shown.
            warnings.simplefilter("error")
            try:
                config = super().db_url_config(canonical, engine=engine)
            except (ValueError, Warning):
                raise UrlProblem("not a PostgreSQL URL") from None
        options = config.setdefault("OPTIONS", {})
        if hosts:
            config["HOST"] = ",".join(host for host, _ in hosts)
            config["PORT"] = str(config["PORT"])
        elif "host" in options:  # a Unix socket directory: postgres:///db?host=/var/run/postgresql
            config["HOST"] = str(options.pop("host"))
            config["PORT"] = str(options.pop("port", LIBPQ_DEFAULT_PORT))
        else:
            raise UrlProblem("the URL names no host")
        return config


def split_host(hostport: str) -> tuple[str, str] | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port or ""); None when malformed."""
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


def libpq_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """The libpq host pre-pass: the URL with a port on every host, and its hosts as libpq reads them.

    Each host without a port gets libpq's default (5432), so django-environ's port list lines up with the hosts;
    the hosts returned are unbracketed (IPv6) and percent-decoded (a socket directory such as ``%2Ftmp``). A ``+``
    in the database name stays a ``+`` (django-environ decodes the path as a form value, libpq does not).
    Raises :class:`UrlProblem`, whose message names what is wrong and never quotes the URL.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UrlProblem("not a PostgreSQL URL") from None
    name = parts.path.lstrip("/")
    if parts.scheme not in POSTGRES_SCHEMES or not name:
        raise UrlProblem("not a PostgreSQL URL")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    hosts: list[tuple[str, str]] = []
    netloc_hosts: list[str] = []
    for hostport in hostlist.split(",") if hostlist else []:
        split = split_host(hostport)
        if split is None:
            raise UrlProblem("a host in the URL is not host or host:port")
        host, port = split
        port = port or LIBPQ_DEFAULT_PORT
        hosts.append((unquote(host), port))
        netloc_hosts.append(f"[{host}]:{port}" if hostport.startswith("[") else f"{host}:{port}")
    netloc = f"{userinfo}{at}{','.join(netloc_hosts)}"
    path = "/" + name.replace("+", "%2B")
    return urlunsplit((parts.scheme, netloc, path, parts.query, "")), hosts


# --- .env ----------------------------------------------------------------------------------------------------------


class _DropReadEnvRecords(logging.Filter):
    """Drops ``read_env``'s ``Invalid line: <the line>`` record, which would print a secret such as ``JWT_SECRET = x``
    (Bulwark reports the line by its number instead, :func:`dotenv_read`), and its ``Read environment variables
    from`` record, which would say "a StringIO" once per line (:func:`parse_dotenv` feeds it one line at a time)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Invalid line", "Read environment variables from"))


logging.getLogger("environ.environ").addFilter(_DropReadEnvRecords())


@dataclass(frozen=True)
class Dotenv:
    """A ``.env`` file as read: its values, and what kept it (or some of its lines) from being read."""

    path: Path | None
    values: dict[str, str]
    problem: str | None = None  # never a value: the path, an OS reason, line numbers


def parse_dotenv(text: str) -> tuple[dict[str, str], list[int]]:
    """django-environ's ``read_env`` into a private dict, line by line; returns the values and the unparsed lines.

    ``read_env`` parses each line on its own, so feeding it one line at a time changes nothing but tells which line
    it could not parse. Indentation and trailing blanks are not syntax (the line is stripped first).
    """
    sink: Any = type("_DotenvSink", (environ.Env,), {"ENVIRON": {}})  # read_env writes into cls.ENVIRON
    values: dict[str, str] = {}
    unparsed: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sink.ENVIRON = {}
        sink.read_env(io.StringIO(line), overwrite=True)
        if sink.ENVIRON:
            values.update(sink.ENVIRON)
        else:
            unparsed.append(number)
    return values, unparsed


def dotenv_read(path: Path | None) -> Dotenv:
    """The file's values (none when there is no file) and, when it or a line could not be read, why."""
    if path is None or not path.is_file():
        return Dotenv(path, {})
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return Dotenv(path, {}, f"cannot read {path} (not UTF-8 text); nothing in it was used.")
    except OSError as exc:
        return Dotenv(path, {}, f"cannot read {path} ({exc.strerror or type(exc).__name__}); nothing in it was used.")
    values, unparsed = parse_dotenv(text)
    if not unparsed:
        return Dotenv(path, values)
    lines = f"line {unparsed[0]}" if len(unparsed) == 1 else f"lines {', '.join(map(str, unparsed))}"
    return Dotenv(
        path,
        values,
        f"{lines} of {path} not read: write NAME=value, without spaces around = (quote a value with spaces), "
        "or comment the line out with #.",
    )
