"""One registry per extension point.

An entry maps a short name to ``"package.module:Attr"`` plus an install hint;
the module is imported only when the entry is first loaded. Third parties
register through the entry-point group ``forgeml.<point>``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from forgeml._core._errors import RegistryError, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    hint: str = ""
    aliases: tuple[str, ...] = ()


class Registry:
    """Names at one extension point, resolved lazily to objects."""

    def __init__(self, point: str) -> None:
        self.point = point
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._plugins_scanned = False

    def register(
        self, name: str, target: str, *, hint: str = "", aliases: tuple[str, ...] = ()
    ) -> None:
        if ":" not in target:
            raise RegistryError(
                f"Registry '{self.point}': target for '{name}' must look like "
                f"'package.module:Attr'. Got {target!r}."
            )
        self._entries[name] = Entry(name, target, hint, aliases)
        self._loaded.pop(name, None)
        for alias in aliases:
            self._aliases[alias] = name

    def _scan_plugins(self) -> None:
        if self._plugins_scanned:
            return
        self._plugins_scanned = True
        for ep in entry_points(group=f"forgeml.{self.point}"):
            if ep.name not in self._entries:
                self.register(ep.name, ep.value)

    def names(self) -> list[str]:
        self._scan_plugins()
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        self._scan_plugins()
        name = self._aliases.get(name, name)
        if name not in self._entries:
            known = self.names()
            raise RegistryError(
                f"Unknown {self.point} '{name}'. Known: {', '.join(known)}."
                + did_you_mean(name, [*known, *self._aliases])
            )
        return name

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        self._scan_plugins()
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def load(self, name: str) -> Any:
        """Import and return the object registered under ``name`` (or an alias)."""
        name = self.canonical(name)
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries[name]
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" HINT: {entry.hint}" if entry.hint else ""
            raise RegistryError(
                f"{self.point} '{name}' needs a package that is not installed "
                f"({exc.name or exc}).{hint}"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        self._loaded[name] = obj
        return obj
