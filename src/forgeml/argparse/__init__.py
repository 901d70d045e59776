"""Command lines that return a :class:`forgeml.config.Config`.

:class:`ArgumentParser` adds forgeml's run options and merges config files and
overrides; :func:`parser_for` builds options from a function's signature.
"""

from forgeml._core._errors import ArgumentError
from forgeml.argparse._parser import ArgumentParser, add_run_options
from forgeml.argparse._signature import FunctionParser, call_with_config, parser_for

__all__ = [
    "ArgumentError",
    "ArgumentParser",
    "FunctionParser",
    "add_run_options",
    "call_with_config",
    "parser_for",
]
