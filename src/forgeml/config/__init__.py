"""Hierarchical YAML configuration.

``!include`` pulls in another file (YAML, JSON or text) relative to the
including file; an ``import:`` block merges included values under the local
ones, with ``import.defaults`` as the base of the whole document; floats follow
YAML 1.2 (``1e-3``); only safe tags load.
"""

from forgeml._core._errors import ConfigError
from forgeml.config._config import Config, merge
from forgeml.config._loader import load, loads
from forgeml.config._overrides import apply_overrides, is_override, parse_override

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "is_override",
    "load",
    "loads",
    "merge",
    "parse_override",
]
