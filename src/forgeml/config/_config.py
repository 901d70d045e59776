"""``Config``: a dict with attribute access, a round-tripping repr, and YAML/JSON I/O."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from forgeml._core._errors import ConfigError, did_you_mean
from forgeml._core._files import atomic_write_text


def to_config(value: Any) -> Any:
    """Turn nested mappings (also inside lists and tuples) into ``Config``."""
    if isinstance(value, Config):
        return value
    if isinstance(value, Mapping):
        return Config(value)
    if isinstance(value, list):
        return [to_config(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_config(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """Turn ``Config`` (and nested ones) back into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively update ``base`` in place with ``update``; ``update`` wins, dicts merge."""
    for key, value in update.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge(current, value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(
        f"{value!r} ({type(value).__name__}) is not a string, number, boolean, None, "
        f"list or mapping"
    )


class Config(dict[str, Any]):
    """A dict with attribute access whose nested dicts are ``Config`` too.

    >>> cfg = Config({"app_site": {"name": "site1"}, "seed": 1204})
    >>> cfg.app_site.name
    'site1'
    >>> eval(repr(cfg)) == cfg
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, to_config(value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            if name.startswith("__"):
                raise AttributeError(name) from None
            raise AttributeError(
                f"Config has no key '{name}'. Keys: {', '.join(map(str, self)) or '(none)'}."
                + did_you_mean(name, map(str, self))
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *(k for k in self if isinstance(k, str) and k.isidentifier())]

    def __repr__(self) -> str:
        return f"Config({dict.__repr__(self)})"

    __str__ = __repr__

    def __copy__(self) -> Config:
        return Config(dict(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> Config:
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (dict(self),))

    def copy(self) -> Config:
        return Config(dict(self))

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` (nested ``Config`` become dicts, tuples become lists)."""
        result: dict[str, Any] = to_plain(self)
        return result

    def get_path(self, dotted: str, default: Any = None) -> Any:
        """``cfg.get_path("a.b.c")`` is ``cfg.a.b.c``, or ``default`` when a part is missing."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def merge(self, other: Mapping[str, Any]) -> Config:
        """Recursively update this config with ``other`` (``other`` wins) and return it."""
        merge(self, other)
        return self

    def dump(self, fmt: str = "yaml") -> str:
        """This config as YAML (default) or JSON text."""
        if fmt == "json":
            try:
                return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"Cannot write this config as JSON: {exc}.") from None
        if fmt in ("yaml", "yml"):
            from forgeml.config._loader import dump_yaml

            return dump_yaml(self.to_dict())
        raise ConfigError(f"Config.dump format must be 'yaml' or 'json'. Got {fmt!r}.")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this config atomically; the suffix (.yml/.yaml/.json) picks the format."""
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix not in (".yml", ".yaml", ".json"):
            raise ConfigError(
                f"Cannot save a config to '{target}': the suffix must be .yml, .yaml or .json."
            )
        atomic_write_text(target, self.dump("json" if suffix == ".json" else "yaml"))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *overrides: str, **kwargs: Any) -> Config:
        """Load a config file and apply overrides (see :func:`forgeml.config.load`)."""
        from forgeml.config._loader import load

        return load(path, *overrides, **kwargs)
