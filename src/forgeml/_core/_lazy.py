"""Lazy imports: check for a package without importing it, and run code when it is imported."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

_hooks: dict[str, dict[object, Callable[[ModuleType], None]]] = {}
_lock = threading.Lock()


def is_installed(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _PostImportLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Hand the module back to its real loader, so pkgutil/importlib.resources work.
        module.__loader__ = self._wrapped
        if module.__spec__ is not None:
            module.__spec__.loader = self._wrapped
        self._wrapped.exec_module(module)
        with _lock:
            callbacks = _hooks.pop(module.__name__, {})
        for callback in callbacks.values():
            try:
                callback(module)
            except Exception as exc:
                warnings.warn(
                    f"forgeml: a hook on importing {module.__name__} failed: {exc!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PostImportLoader(spec.loader)
                return spec
        return None


_finder = _PostImportFinder()


def when_imported(name: str, callback: Callable[[ModuleType], None], *, key: object = None) -> None:
    """Call ``callback(module)`` once ``name`` is imported: now if it already is, else later.

    This lets the launcher seed a framework the program imports after ``app.run``
    starts, without paying for the import when the program never uses it.
    """
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _hooks.setdefault(name, {})[key if key is not None else object()] = callback
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
