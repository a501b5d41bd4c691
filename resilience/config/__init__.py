"""Configuration: the only place that reads the process environment.

If the environment is wrong, nothing starts: :func:`load_config` collects every
problem and raises one :class:`ConfigError` that lists them all (never a secret's value).
"""

from resilience.config.loader import Config, ConfigError, environment, load_config
from resilience.config.reader import Finding, read_dotenv
from resilience.config.schema import SCHEMA, Var

__all__ = ["SCHEMA", "Config", "ConfigError", "Finding", "Var", "environment", "load_config", "read_dotenv"]
