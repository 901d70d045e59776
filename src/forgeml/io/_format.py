"""The format registry: one handler class per file format, found by name or suffix."""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any, ClassVar

from forgeml._core._errors import FormatError, RegistryError, did_you_mean
from forgeml._core._registry import Registry

#: Format handlers by name; third parties add theirs through the entry-point group
#: ``forgeml.formats`` (the target is a :class:`Format` subclass) or :func:`register_format`.
FORMATS = Registry("formats")

# Suffixes of registered formats, known without importing their handlers.
_SUFFIXES: dict[str, tuple[str, ...]] = {}
_handlers: dict[str, Format] = {}

#: What the safe formats are good for, for errors that refuse unsafe ones.
SAFE_ALTERNATIVES = (
    ".safetensors or .npz (arrays), .h5 (nested arrays and scalars), "
    ".json or .yaml (plain data), skops for scikit-learn models"
)


class Format:
    """One file format: how to write an object to a stream and read it back.

    Subclasses set :attr:`name` and :attr:`suffixes` and implement
    :meth:`write` or :meth:`dumps` (one is enough: each defaults to the other),
    and :meth:`read` or :meth:`loads`. Keyword options a caller may pass to
    ``save``/``load`` are listed in :attr:`save_options`/:attr:`load_options`;
    ``meta`` reaches :meth:`write` only when :attr:`stores_meta` is true, and
    ``trust`` reaches the methods whose options list it.
    """

    #: the registry name, e.g. ``"h5"``
    name: ClassVar[str] = ""
    #: lower-case suffixes with the dot, the first one preferred, e.g. ``(".h5", ".hdf5")``
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: keyword options ``save`` accepts for this format
    save_options: ClassVar[tuple[str, ...]] = ()
    #: keyword options ``load`` accepts for this format
    load_options: ClassVar[tuple[str, ...]] = ()
    #: whether the format keeps ``meta=`` (returned by ``load(..., with_meta=True)``)
    stores_meta: ClassVar[bool] = False
    #: formats that can run code when loaded (pickle) refuse to work without ``trust=True``
    needs_trust: ClassVar[bool] = False

    # Subclasses replace ``*args: Any, **opts: Any`` with their keyword options.

    def write(self, obj: Any, f: IO[bytes], *args: Any, **opts: Any) -> None:
        """Write ``obj`` to ``f``, a write-only, unseekable binary stream."""
        if type(self).dumps is Format.dumps:
            raise NotImplementedError(f"{type(self).__name__} implements neither write nor dumps")
        f.write(self.dumps(obj, *args, **opts))

    def dumps(self, obj: Any, *args: Any, **opts: Any) -> bytes:
        """``obj`` as the bytes of a file in this format."""
        if type(self).write is Format.write:
            raise NotImplementedError(f"{type(self).__name__} implements neither write nor dumps")
        buffer = io.BytesIO()
        self.write(obj, buffer, *args, **opts)
        return buffer.getvalue()

    def read(self, path: Path, *args: Any, **opts: Any) -> tuple[Any, dict[str, Any]]:
        """Read the file at ``path``; return ``(data, meta)`` (``meta`` is ``{}`` if none)."""
        if type(self).loads is Format.loads:
            raise NotImplementedError(f"{type(self).__name__} implements neither read nor loads")
        return self.loads(path.read_bytes(), *args, **opts)

    def loads(self, data: bytes, *args: Any, **opts: Any) -> tuple[Any, dict[str, Any]]:
        """Read a file's bytes; return ``(data, meta)``."""
        if type(self).read is Format.read:
            raise NotImplementedError(f"{type(self).__name__} implements neither read nor loads")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="forgeml-io-") as tmp:
            path = Path(tmp) / f"data{self.suffixes[0] if self.suffixes else ''}"
            path.write_bytes(data)
            return self.read(path, *args, **opts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} format {self.name!r} {', '.join(self.suffixes)}>"


def register_format(
    name: str,
    target: str,
    *,
    suffixes: Iterable[str],
    hint: str = "",
    aliases: tuple[str, ...] = (),
) -> None:
    """Register a :class:`Format` subclass at ``target`` (``"package.module:Class"``).

    ``suffixes`` (e.g. ``[".arrow"]``) map file names to it without importing it.
    A suffix an earlier format claimed stays with that format.
    """
    clean = tuple(_normalize_suffix(s) for s in suffixes)
    if not clean:
        raise FormatError(f"Format '{name}' needs at least one suffix, e.g. suffixes=['.{name}'].")
    FORMATS.register(name, target, hint=hint, aliases=aliases)
    _SUFFIXES[name] = clean
    _handlers.pop(name, None)


def _normalize_suffix(suffix: str) -> str:
    if not isinstance(suffix, str) or not suffix.strip(". "):
        raise FormatError(f"A format suffix must be a string like '.h5'. Got {suffix!r}.")
    suffix = suffix.strip().lower()
    return suffix if suffix.startswith(".") else f".{suffix}"


def get_format(name: str) -> Format:
    """The handler registered as ``name`` (a name, an alias, or a suffix such as ``".h5"``)."""
    if name.startswith("."):
        by_suffix = suffix_map()
        canonical = by_suffix.get(name.lower())
        if canonical is None:
            raise FormatError(_unknown_suffix(name, by_suffix))
    else:
        try:
            canonical = FORMATS.canonical(name)
        except RegistryError:
            known = FORMATS.names()
            raise FormatError(
                f"Unknown format {name!r}. Known: {', '.join(known)}."
                + did_you_mean(name, [*known, *(s.lstrip(".") for s in suffix_map())])
            ) from None
    handler = _handlers.get(canonical)
    if handler is None:
        loaded = FORMATS.load(canonical)
        handler = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(handler, Format):
            raise FormatError(
                f"Format '{canonical}' ({FORMATS.entry(canonical).target}) is not a "
                f"forgeml.io.Format subclass. Got {type(handler).__name__}."
            )
        _handlers[canonical] = handler
    return handler


def format_for_path(path: Path) -> Format:
    """The handler for ``path``'s suffix (the longest registered suffix it ends with)."""
    lowered = path.name.lower()
    builtin = _match(lowered, _builtin_suffix_map())
    if builtin is not None:
        return get_format(builtin)
    by_suffix = suffix_map()
    name = _match(lowered, by_suffix)
    if name is None:
        raise FormatError(_unknown_suffix(path.suffix, by_suffix, path=path))
    return get_format(name)


def _match(filename: str, by_suffix: Mapping[str, str]) -> str | None:
    best = ""
    for suffix in by_suffix:
        if filename.endswith(suffix) and len(filename) > len(suffix) and len(suffix) > len(best):
            best = suffix
    return by_suffix[best] if best else None


def _builtin_suffix_map() -> dict[str, str]:
    result: dict[str, str] = {}
    for name, suffixes in _SUFFIXES.items():
        for suffix in suffixes:
            result.setdefault(suffix, name)
    return result


def suffix_map() -> dict[str, str]:
    """Every known suffix mapped to its format name, plugins included."""
    result = _builtin_suffix_map()
    for name in FORMATS.names():  # entry-point plugins declare their suffixes on the class
        if name in _SUFFIXES:
            continue
        try:
            handler = get_format(name)
        except (FormatError, RegistryError):
            continue
        for suffix in handler.suffixes:
            result.setdefault(_normalize_suffix(suffix), name)
    return dict(sorted(result.items()))


def formats() -> dict[str, str]:
    """The suffixes ``save``/``load`` understand, each mapped to its format name.

    >>> formats()[".h5"]
    'h5'
    """
    return suffix_map()


def _unknown_suffix(suffix: str, by_suffix: Mapping[str, str], path: Path | None = None) -> str:
    supported = ", ".join(by_suffix)
    where = f"'{path}'" if path is not None else "the format"
    if not suffix:
        problem = f"Cannot tell the format of {where}: it has no suffix."
    else:
        problem = f"Cannot tell the format of {where} from its suffix {suffix!r}."
    return (
        f"{problem} Supported suffixes: {supported}.{did_you_mean(suffix.lower(), by_suffix)}"
        f" Or pass fmt=NAME (one of: {', '.join(FORMATS.names())})."
    )


def require(module: str, fmt: str, hint: str) -> ModuleType:
    """Import ``module`` for format ``fmt``, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FormatError(
            f"The {fmt} format needs the '{module}' package, which is not installed "
            f"({exc}). HINT: {hint}"
        ) from None


def _register_builtin(
    name: str, cls: str, suffixes: tuple[str, ...], hint: str = "", aliases: tuple[str, ...] = ()
) -> None:
    FORMATS.register(name, f"forgeml.io.{cls}", hint=hint, aliases=aliases)
    _SUFFIXES[name] = suffixes


_register_builtin("safetensors", "_safetensors:SafetensorsFormat", (".safetensors",))
_register_builtin("h5", "_hdf5:HDF5Format", (".h5", ".hdf5"), aliases=("hdf5",))
_register_builtin("npz", "_basic:NpzFormat", (".npz",))
_register_builtin("npy", "_basic:NpyFormat", (".npy",))
_register_builtin("json", "_basic:JsonFormat", (".json",))
_register_builtin("yaml", "_basic:YamlFormat", (".yaml", ".yml"), aliases=("yml",))
_register_builtin("pt", "_torch:TorchFormat", (".pt", ".pth"), aliases=("pth", "torch"))
_register_builtin("pkl", "_basic:PickleFormat", (".pkl", ".pickle"), aliases=("pickle",))
