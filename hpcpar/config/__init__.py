"""Layered configuration: built-in defaults < site < site profile < profile < env < flags.

``load_config(profile, overrides)`` validates every layer before anything runs and
returns a :class:`Config` that knows where each value came from.
"""

from .loader import (
    Config,
    defaults_config,
    load_config,
    normalize_overrides,
    profile_config_path,
    site_config_files,
    site_template_dirs,
)
from .schema import SYSTEMS, Key, defaults_text, schema
from .validate import ConfigError, display_path

__all__ = [
    "SYSTEMS",
    "Config",
    "ConfigError",
    "defaults_config",
    "Key",
    "defaults_text",
    "display_path",
    "load_config",
    "normalize_overrides",
    "profile_config_path",
    "schema",
    "site_config_files",
    "site_template_dirs",
]
