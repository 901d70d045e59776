"""Dotted ``key.sub=value`` overrides whose values are parsed as YAML."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

from forgeml._core._errors import ConfigError
from forgeml.config._config import Config

_CWD_MARK = "<override>"


def is_override(text: str) -> bool:
    """True for ``key=value`` strings (the key may be dotted)."""
    key, sep, _ = text.partition("=")
    return bool(sep) and bool(key) and all(part.strip() for part in key.split("."))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], parsed value)``.

    The value is everything after the first ``=`` (so values may contain ``=``),
    parsed as YAML with the same safe loader as config files.
    """
    from forgeml.config._loader import parse_yaml

    key, sep, raw = text.partition("=")
    if not sep or not is_override(text):
        raise ConfigError(
            f"Override {text!r} must look like 'key=value' or 'key.sub=value' "
            f"(e.g. 'log.priority=2')."
        )
    parts = [part.strip() for part in key.strip().split(".")]
    if raw.strip() == "":
        return parts, ""
    try:
        value = parse_yaml(raw, path=Path.cwd() / _CWD_MARK)
    except ConfigError as exc:
        raise ConfigError(
            f"Override {text!r}: the value is not valid YAML ({str(exc).rstrip('.')}). "
            f"Quote it to keep it a string, e.g. {key}='\"{raw}\"'."
        ) from None
    if value is None and raw.strip() not in ("null", "Null", "NULL", "~"):
        value = raw.strip()  # "#fff" is a comment to YAML, but a value here
    return parts, value


def set_path(cfg: MutableMapping[str, Any], parts: list[str], value: Any) -> None:
    """Set ``cfg[parts[0]][parts[1]]... = value``, replacing non-mapping values on the way."""
    node: MutableMapping[str, Any] = cfg
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, MutableMapping):
            node[part] = Config()
            child = node[part]
        node = child
    node[parts[-1]] = value


def apply_overrides(cfg: MutableMapping[str, Any], overrides: Iterable[str]) -> None:
    """Apply ``key.sub=value`` strings to ``cfg`` in order."""
    for text in overrides:
        parts, value = parse_override(text)
        set_path(cfg, parts, value)
