"""Configuration: the only place that reads the process environment.

If the environment is wrong, nothing starts: :func:`load_config` collects every
problem and raises one :class:`ConfigError` that lists them all (never a secret's value).

**What django-environ (0.14.0) does.** Every variable is read through one ``environ.Env`` subclass,
:class:`~resilience.config.env.BulwarkEnv`: django-environ's ``NAME_FILE`` lookup (the file wins over
``NAME``), its exact casts (``int``, ``list``, the ``bool`` of an accepted word, ``urlparse``), its
database URL parser ``db_url_config`` (user, password, name, libpq query options, engine, a port list
for several hosts) and its ``.env`` line parser ``read_env``.

**What Bulwark adds, and why.** django-environ stops at the first problem, quotes values in its errors
and accepts too much; a deployment should be fixed in one round and never leak a secret. So, on top:

* one pass that reports every problem at once, each naming its variable (:mod:`~resilience.config.reader`),
  never a secret's value or a URL, never a traceback; the schema (:mod:`~resilience.config.schema`) is the
  one list of variables, their defaults and secrecy, from which ``.env.example`` and the README's table are
  generated (:mod:`~resilience.config.docs`);
* values taken literally: django-environ reads a value that starts with ``$`` as another variable's name
  (with no switch in 0.14), and generated secrets contain ``$``;
* ``NAME_FILE`` without the file's final newline, and a missing or unreadable file reported like any other
  problem (django-environ raises ``FileNotFoundError``);
* validators before the lenient casts: ``bool('maybe')``, ``float('x1')``, ``url('not a url')``, a
  ``mysql://`` or scheme-less database URL are refused (django-environ returns False, 1.0, a URL, a MySQL
  entry, or warns with the password in the warning);
* the libpq host pre-pass in front of ``db_url_config`` (:func:`~resilience.config.env.libpq_url`): a port
  for every host, IPv6 hosts unbracketed, ``%2F`` socket directories decoded, so psycopg gets the host list
  libpq would read from the URL;
* the ``.env`` file read into a private mapping, never ``os.environ`` (the real environment wins), and a line
  ``read_env`` cannot parse reported by number, never printed (:func:`~resilience.config.env.dotenv_read`);
* the seed's variables as fallbacks (``DB_*``, ``JAEGER_ENDPOINT``, ``PROMETHEUS_PORT``), production rules
  (``DEBUG`` refused, ``ALLOWED_HOSTS`` required), SPOF warnings, and ``manage.py validate_env``
  (:mod:`~resilience.config.validate`), which imports nothing that needs Django's settings, so it runs
  exactly when they cannot load.
"""

from resilience.config.loader import Config, ConfigError, environment, load_config
from resilience.config.reader import Finding, read_dotenv
from resilience.config.schema import SCHEMA, Var

__all__ = ["SCHEMA", "Config", "ConfigError", "Finding", "Var", "environment", "load_config", "read_dotenv"]
