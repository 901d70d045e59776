"""``save_object`` / ``load_object``: a documented, safe zip archive.

Layout::

    manifest.json            format, version, the object's definition, its state index,
                             and the sha256 of every other member
    state/<path>/<attr>.*    framework state (safetensors, skops, UBJ, .weights.h5 ...)
    custom/<path>/...        files written by save_object_imp(archive)

``<path>`` is ``root`` for the saved object and ``root/<attr>`` for Objects held
in its attributes. Loading imports the class by its path, rebuilds it from the
definition, then restores state; it never unpickles.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_open
from forgeml._version import __version__
from forgeml.objects._object import Object, ObjectDef

FORMAT = "forgeml.object"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Refuse archives whose members add up to more than this many bytes (zip-bomb guard).
MAX_TOTAL_BYTES = 64 * 2**30
#: Refuse compressed members that expand more than this many times.
MAX_COMPRESSION_RATIO = 1000
_SELF = "self"
_STORED_SUFFIXES = (".safetensors", ".h5", ".ubj", ".skops", ".npy", ".npz", ".pt", ".onnx")


class Archive:
    """The view of an archive that ``save_object_imp`` / ``load_object_imp`` receive.

    Names are relative paths inside this object's own folder of the archive.
    """

    def __init__(self, root: Path, prefix: str) -> None:
        self._root = root
        self._prefix = prefix

    def path(self, name: str) -> Path:
        """A filesystem path for ``name`` (for libraries that write files themselves)."""
        relative = _check_name(f"{self._prefix}/{name}")
        target = self._root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_bytes(self, name: str, data: bytes) -> None:
        self.path(name).write_bytes(data)

    def read_bytes(self, name: str) -> bytes:
        return self._existing(name).read_bytes()

    def write_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text, encoding="utf-8")

    def read_text(self, name: str) -> str:
        return self._existing(name).read_text(encoding="utf-8")

    def save(self, name: str, obj: Any, **opts: Any) -> None:
        """Save ``obj`` with :func:`forgeml.io.save` (the suffix picks the format)."""
        from forgeml.io import save

        save(obj, self.path(name), checksum=False, **opts)

    def load(self, name: str, **opts: Any) -> Any:
        """Load a member with :func:`forgeml.io.load`."""
        from forgeml.io import load

        return load(self._existing(name), **opts)

    def names(self) -> list[str]:
        base = self._root / self._prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self._root / self._prefix / name).is_file()

    def _existing(self, name: str) -> Path:
        target = self._root / _check_name(f"{self._prefix}/{name}")
        if not target.is_file():
            raise ObjectError(
                f"The archive has no member '{name}' for this object. Members: "
                f"{', '.join(self.names()) or '(none)'}."
            )
        return target


def _check_name(name: str) -> str:
    """Refuse member names that could escape the extraction folder."""
    if "\\" in name or "\x00" in name:
        raise ObjectError(f"Unsafe archive member name {name!r}.")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name.startswith("/"):
        raise ObjectError(f"Unsafe archive member name {name!r}: it escapes the archive root.")
    return path.as_posix()


# ----------------------------------------------------------------------------- saving


def _state_slots(obj: Object) -> Iterator[tuple[str, Any]]:
    """(attribute path, value) of everything an object holds, one container level deep."""
    for attr, value in vars(obj).items():
        if attr.startswith("_dry_"):
            continue
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield f"{attr}.{i}", item
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            for key, item in value.items():
                yield f"{attr}.{key}", item
        yield attr, value


def _save_state(obj: Object, root: Path, prefix: str, seen: set[int]) -> dict[str, Any]:
    from forgeml.frameworks import state_adapter_for

    seen.add(id(obj))
    state: dict[str, Any] = {"attrs": {}, "objects": {}}
    own = state_adapter_for(obj)  # e.g. class Net(Object, torch.nn.Module)
    if own is not None:
        directory = root / "state" / prefix
        directory.mkdir(parents=True, exist_ok=True)
        state["attrs"][_SELF] = {"adapter": own.name, "info": own.save_state(obj, directory, _SELF)}
    covered: set[str] = set()
    for slot, value in [] if own is not None else _state_slots(obj):
        if any(slot.startswith(f"{c}.") for c in covered) or id(value) in seen:
            continue
        if isinstance(value, Object):
            state["objects"][slot] = _save_state(value, root, f"{prefix}/{slot}", seen)
            covered.add(slot)
            continue
        adapter = state_adapter_for(value)
        if adapter is None:
            continue
        directory = root / "state" / prefix
        directory.mkdir(parents=True, exist_ok=True)
        info = adapter.save_state(value, directory, slot)
        state["attrs"][slot] = {"adapter": adapter.name, "info": info}
        seen.add(id(value))
        covered.add(slot)
    hook = getattr(obj, "save_object_imp", None)
    if callable(hook):
        if hook(Archive(root / "custom", prefix)) is False:
            raise ObjectError(f"{type(obj).__qualname__}.save_object_imp() returned False.")
        state["custom"] = True
    return state


def save_object(obj: Object, target: str | os.PathLike[str] | IO[bytes]) -> bool:
    """Save ``obj`` (definition and state) to a path or a binary file object; returns True.

    Writing to a path is atomic: an interrupted save leaves the previous file intact.
    """
    if not isinstance(obj, Object):
        raise ObjectError(
            f"save_object needs a forgeml.Object. Got {type(obj).__name__}. "
            f"For plain data use forgeml.io.save."
        )
    with tempfile.TemporaryDirectory(prefix="forgeml-save-") as tmp:
        root = Path(tmp)
        definition = obj.definition()
        state = _save_state(obj, root, "root", set())
        members = sorted(p for p in root.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "forgeml_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "object": {
                **definition.to_dict(),
                "dry_id": obj.dry_id,
                "mro": _mro_paths(type(obj)),
                "state": state,
            },
            "members": {p.relative_to(root).as_posix(): _sha256(p) for p in members},
        }
        if isinstance(target, str | os.PathLike):
            with atomic_open(target, binary=True) as f:
                _write_zip(f, root, members, manifest)
        else:
            _write_zip(target, root, members, manifest)
    return True


def _mro_paths(cls: type) -> list[str]:
    from forgeml.objects._codec import class_path

    return [class_path(c) for c in cls.__mro__ if issubclass(c, Object)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_zip(
    stream: IO[bytes], root: Path, members: list[Path], manifest: dict[str, Any]
) -> None:
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        for path in members:
            name = path.relative_to(root).as_posix()
            stored = path.suffix in _STORED_SUFFIXES
            zf.write(path, name, compress_type=zipfile.ZIP_STORED if stored else None)


# ----------------------------------------------------------------------------- loading


def read_manifest(source: str | os.PathLike[str] | IO[bytes]) -> dict[str, Any]:
    """The manifest of an archive, checked; no member besides it is read."""
    with _open_zip(source) as zf:
        return _read_manifest(zf, _describe(source))


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else repr(source)


@contextlib.contextmanager
def _open_zip(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[zipfile.ZipFile]:
    try:
        if isinstance(source, str | os.PathLike):
            with zipfile.ZipFile(source) as zf:
                yield zf
        else:
            with zipfile.ZipFile(source) as zf:
                yield zf
    except FileNotFoundError:
        raise ObjectError(f"Object archive '{source}' not found.") from None
    except zipfile.BadZipFile as exc:
        raise ObjectError(
            f"'{_describe(source)}' is not a forgeml object archive (not a zip: {exc})."
        ) from None


def _read_manifest(zf: zipfile.ZipFile, where: str) -> dict[str, Any]:
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise ObjectError(
            f"'{where}' has no {MANIFEST}; it is not a forgeml object archive."
        ) from None
    if info.file_size > 64 * 2**20:
        raise ObjectError(f"'{where}': {MANIFEST} is {info.file_size} bytes; refusing to read it.")
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except (ValueError, zipfile.BadZipFile) as exc:
        raise ObjectError(f"'{where}': {MANIFEST} is not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ObjectError(f"'{where}' is not a forgeml object archive (format {found!r}).")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise ObjectError(
            f"'{where}' uses object archive format version {version!r}; this forgeml "
            f"({__version__}) reads versions 1 to {FORMAT_VERSION}. Upgrade forgeml to load it."
        )
    if not isinstance(manifest.get("members"), dict) or not isinstance(
        manifest.get("object"), dict
    ):
        raise ObjectError(f"'{where}': the manifest lacks 'object' or 'members'.")
    return manifest


def _extract(zf: zipfile.ZipFile, manifest: dict[str, Any], root: Path, where: str) -> None:
    """Extract the listed members, refusing unsafe names, bombs and bad checksums."""
    expected: dict[str, str] = manifest["members"]
    infos = [i for i in zf.infolist() if i.filename != MANIFEST]
    names = {i.filename for i in infos}
    if len(names) != len(infos):
        raise ObjectError(f"'{where}' holds duplicate member names; refusing it.")
    if names != set(expected):
        extra = sorted(names - set(expected))
        missing = sorted(set(expected) - names)
        raise ObjectError(
            f"'{where}': members do not match the manifest (unlisted: {extra}, missing: {missing})."
        )
    total = 0
    for info in infos:
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode) or info.is_dir():
            raise ObjectError(
                f"'{where}': member {info.filename!r} is a link or folder; refusing it."
            )
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise ObjectError(f"'{where}' expands past {MAX_TOTAL_BYTES} bytes; refusing it.")
        ratio = info.file_size / info.compress_size if info.compress_size else 0
        if ratio > MAX_COMPRESSION_RATIO:
            raise ObjectError(
                f"'{where}': member {info.filename!r} expands {ratio:.0f}x (a zip bomb?); "
                f"refusing it."
            )
    for info in infos:
        target = root / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        written = 0
        with zf.open(info) as src, target.open("wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > info.file_size:
                    raise ObjectError(
                        f"'{where}': member {info.filename!r} is longer than declared."
                    )
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != expected[info.filename]:
            raise ObjectError(
                f"'{where}': member {info.filename!r} is corrupted (sha256 {digest.hexdigest()}, "
                f"manifest says {expected[info.filename]})."
            )


def _restore_state(
    obj: Object, state: dict[str, Any], root: Path, prefix: str, trust: bool
) -> None:
    from forgeml.frameworks import get_adapter

    for slot, nested in state.get("objects", {}).items():
        value = _get_slot(obj, slot)
        if not isinstance(value, Object):
            raise ObjectError(
                f"{type(obj).__qualname__}.{slot} held an Object when saved, but the rebuilt "
                f"object holds {type(value).__name__}. Does __init__ build it?"
            )
        _restore_state(value, nested, root, f"{prefix}/{slot}", trust)
    for slot, entry in state.get("attrs", {}).items():
        adapter: Any = get_adapter(entry["adapter"])
        current = obj if slot == _SELF else _get_slot(obj, slot)
        restored = adapter.load_state(current, root / "state" / prefix, entry["info"], trust=trust)
        if restored is current:
            continue
        if slot == _SELF:
            raise ObjectError(
                f"The {entry['adapter']} adapter cannot restore {type(obj).__qualname__} in place."
            )
        _set_slot(obj, slot, restored)
    if state.get("custom"):
        hook = getattr(obj, "load_object_imp", None)
        if not callable(hook):
            raise ObjectError(
                f"The archive holds custom state for {type(obj).__qualname__}, which has no "
                f"load_object_imp(archive) to restore it."
            )
        if hook(Archive(root / "custom", prefix)) is False:
            raise ObjectError(f"{type(obj).__qualname__}.load_object_imp() returned False.")


def _get_slot(obj: Object, slot: str) -> Any:
    attr, _, key = slot.partition(".")
    try:
        value = getattr(obj, attr)
        if not key:
            return value
        return value[int(key)] if isinstance(value, list | tuple) else value[key]
    except (AttributeError, KeyError, IndexError, ValueError):
        raise ObjectError(
            f"The rebuilt {type(obj).__qualname__} has no '{slot}' to restore saved state into. "
            f"Build it in __init__ from the constructor arguments."
        ) from None


def _set_slot(obj: Object, slot: str, value: Any) -> None:
    attr, _, key = slot.partition(".")
    if not key:
        setattr(obj, attr, value)
        return
    container = getattr(obj, attr)
    if isinstance(container, tuple):
        items = list(container)
        items[int(key)] = value
        setattr(obj, attr, type(container)(items))
    elif isinstance(container, list):
        container[int(key)] = value
    else:
        container[key] = value


def load_object(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    allow: Iterable[str] | None = None,
    trust: bool = False,
) -> Any:
    """Load an object saved by :func:`save_object` from a path or binary file object.

    The class is imported by its path (``allow``: module prefixes it may come
    from), rebuilt from its definition with the same ``dry_id``, then its state
    is restored. ``trust`` admits framework types outside the safe allowlists.
    """
    where = _describe(source)
    with _open_zip(source) as zf, tempfile.TemporaryDirectory(prefix="forgeml-load-") as tmp:
        manifest = _read_manifest(zf, where)
        root = Path(tmp)
        _extract(zf, manifest, root, where)
        data = manifest["object"]
        definition = ObjectDef.from_dict(data, allow=allow)
        obj = definition.build()
        _restore_state(obj, data.get("state", {}), root, "root", trust)
        return obj
