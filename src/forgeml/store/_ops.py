"""``ls``, ``get``, ``put``, ``rm`` and ``du`` on any fsspec URL (paths, ``file://``, ``s3://``...)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from forgeml._core._errors import StoreError
from forgeml._core._files import atomic_path
from forgeml.store._fetchers import check_member_name
from forgeml.store._fs import get_filesystem, protocol_of
from forgeml.store._progress import TransferProgress

if TYPE_CHECKING:
    import fsspec

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _store_errors(verb: str, arg: int = 0) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn what the storage libraries raise (botocore, aiohttp, OSError) into StoreError."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except StoreError:
                raise
            except Exception as exc:
                where = str(args[arg]) if len(args) > arg else ""
                raise StoreError(f"Cannot {verb} {where!r}: {_describe(exc)}") from exc

        return wrapper

    return decorate


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".rstrip(".") + "."
    chain = [exc, exc.__cause__, exc.__context__]
    names = {type(e).__name__ for e in chain if e is not None}
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        text += (
            " HINT: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and S3_ENDPOINT_URL for"
            " MinIO/SeaweedFS), or call forgeml.store.configure(key=..., secret=...)."
        )
    return text


@dataclass(frozen=True)
class FileInfo:
    """One entry listed by :func:`ls` (``size`` is 0 for folders)."""

    url: str
    size: int
    is_dir: bool
    modified: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "size": self.size,
            "type": "directory" if self.is_dir else "file",
            "modified": self.modified.isoformat() if self.modified else None,
        }


@_store_errors("list")
def ls(url: str | os.PathLike[str], *, recursive: bool = False) -> list[FileInfo]:
    """The entries in folder/prefix ``url`` (or the file ``url`` itself), sorted by URL.

    With ``recursive=True``, every file below ``url`` (no folder entries).
    Raises :class:`~forgeml.StoreError` when nothing is at ``url``.
    """
    base = os.fspath(url)
    fs, path = _fs(base)
    try:
        if recursive:
            entries = list(fs.find(path, detail=True).values()) if fs.isdir(path) else []
            if not entries and fs.isfile(path):
                entries = [fs.info(path)]
        else:
            entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        entries = []
    except Exception as exc:
        raise StoreError(f"Cannot list {base!r}: {_describe(exc)}") from exc
    if not entries and not _exists(fs, path):
        raise StoreError(f"No such file or folder: {base!r}.")
    prefix = path.rstrip("/")
    infos = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/")
        is_dir = entry.get("type") == "directory"
        if name == prefix:
            if is_dir:
                continue  # some filesystems list the folder itself
            child = base
        else:
            child = _join(base, name[len(prefix) :].lstrip("/"))
        infos.append(
            FileInfo(
                url=child,
                size=0 if is_dir else int(entry.get("size") or 0),
                is_dir=is_dir,
                modified=_modified(entry),
            )
        )
    return sorted(infos, key=lambda i: i.url)


def du(url: str | os.PathLike[str]) -> int:
    """Total bytes of the file ``url``, or of every file below the folder/prefix ``url``."""
    return _usage(os.fspath(url))[0]


@_store_errors("size")
def _usage(url: str) -> tuple[int, int]:
    """(bytes, files) at ``url``."""
    fs, path = _fs(url)
    sizes = _files(fs, path, url)
    return sum(sizes.values()), len(sizes)


@_store_errors("download")
def get(
    url: str | os.PathLike[str],
    local_path: str | os.PathLike[str] = ".",
    *,
    recursive: bool = False,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``local_path`` and return where it landed.

    A file goes to ``local_path``, or inside it when that is an existing folder.
    A folder/prefix needs ``recursive=True`` and is copied to ``local_path``
    (created; files already there are replaced). Every file is written
    atomically. A progress bar shows on stderr for transfers over 8 MB when
    stderr is a terminal (``progress=True`` forces it, ``False`` hides it).
    """
    source = os.fspath(url)
    fs, path = _fs(source)
    target = Path(local_path)
    if fs.isfile(path):
        if target.is_dir():
            target = target / posix_basename(path)
        size = int(fs.size(path) or 0)
        with _progress(size, progress, f"get {source}") as advance:
            _download(fs, path, target, advance)
        return target
    if not fs.isdir(path):
        raise StoreError(f"No such file or folder: {source!r}.")
    if not recursive:
        raise StoreError(
            f"{source!r} is a folder. Pass recursive=True (CLI: --recursive) "
            f"to copy everything below it."
        )
    sizes = _files(fs, path, source)
    with _progress(sum(sizes.values()), progress, f"get {source}") as advance:
        for name in sorted(sizes):
            _download(fs, f"{path.rstrip('/')}/{name}", target / name, advance)
    target.mkdir(parents=True, exist_ok=True)
    return target


@_store_errors("upload", arg=1)
def put(
    local_path: str | os.PathLike[str],
    url: str | os.PathLike[str],
    *,
    recursive: bool = False,
    progress: bool | None = None,
) -> str:
    """Upload the file or folder ``local_path`` to ``url`` and return the URL written.

    A file goes to ``url``, or inside it when ``url`` ends with ``/`` or is an
    existing folder. A folder needs ``recursive=True``; its files go below
    ``url`` with their relative paths. Progress is shown as for :func:`get`.
    """
    source = Path(local_path)
    dest = os.fspath(url)
    if not source.exists():
        raise StoreError(f"No such file or folder: '{source}'.")
    if protocol_of(dest) == "file":
        local_dest = Path(dest[len("file://") :] if dest.lower().startswith("file://") else dest)
        if source.is_file() and (dest.endswith("/") or local_dest.is_dir()):
            local_dest = local_dest / source.name
            dest = _join(dest, source.name)
        get(source, local_dest, recursive=recursive, progress=progress)
        return dest
    fs, path = _fs(dest)
    if source.is_file():
        if dest.endswith("/") or fs.isdir(path):
            path = f"{path.rstrip('/')}/{source.name}"
            dest = _join(dest, source.name)
        size = source.stat().st_size
        with _progress(size, progress, f"put {dest}") as advance:
            _upload(fs, source, path, advance)
        return dest
    if not recursive:
        raise StoreError(
            f"'{source}' is a folder. Pass recursive=True (CLI: --recursive) "
            f"to upload everything below it."
        )
    files = sorted(p for p in source.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    with _progress(total, progress, f"put {dest}") as advance:
        for file in files:
            rel = file.relative_to(source).as_posix()
            _upload(fs, file, f"{path.rstrip('/')}/{rel}", advance)
    return dest


@_store_errors("remove")
def rm(url: str | os.PathLike[str], *, recursive: bool = False) -> int:
    """Remove the file ``url``, or with ``recursive=True`` everything below folder ``url``.

    Returns the number of files removed. The bucket of an ``s3://bucket`` URL
    is emptied, not deleted.
    """
    target = os.fspath(url)
    fs, path = _fs(target)
    if fs.isfile(path):
        _call(fs.rm_file, path, what=f"remove {target!r}")
        return 1
    if not fs.isdir(path):
        raise StoreError(f"No such file or folder: {target!r}.")
    if not recursive:
        raise StoreError(
            f"{target!r} is a folder. Pass recursive=True (CLI: --recursive) "
            f"to remove it with everything below it."
        )
    count = len(_files(fs, path, target))
    if protocol_of(target) not in ("s3", "s3a"):
        _call(fs.rm, path, recursive=True, what=f"remove {target!r}")
        return count
    found = fs.find(path, withdirs=True, detail=True)
    files = [name for name, entry in found.items() if entry.get("type") != "directory"]
    folders = [name for name, entry in found.items() if entry.get("type") == "directory"]
    if "/" in path.strip("/"):  # the bucket itself stays
        folders.append(path)
    if files:
        _call(fs.rm, files, what=f"remove {target!r}")
    # Servers with real folders (SeaweedFS) keep listing emptied ones until their
    # "name/" key is deleted; on AWS that delete is a no-op.
    for folder in sorted(folders, key=len, reverse=True):
        with contextlib.suppress(Exception):
            fs.rm_file(str(folder).rstrip("/") + "/")
    fs.invalidate_cache()
    return count


# ----------------------------------------------------------------------------- helpers


def posix_basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = get_filesystem(url)
    # fsspec reuses filesystem instances with their listings cached: others may
    # have changed the store since, so every operation starts from a fresh listing.
    fs.invalidate_cache()
    return fs, path


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if name else base


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return bool(fs.exists(path))
    except Exception:  # an unreachable store reads as missing here
        return False


def _call(func: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except FileNotFoundError as exc:
        raise StoreError(f"Cannot {what}: not found ({exc}).") from exc
    except PermissionError as exc:
        raise StoreError(f"Cannot {what}: permission denied ({exc}).") from exc
    except OSError as exc:
        raise StoreError(f"Cannot {what}: {exc}") from exc


def _files(fs: fsspec.AbstractFileSystem, path: str, url: str) -> dict[str, int]:
    """Relative name -> size of every file at/below ``path`` (a file maps its own name)."""
    try:
        if fs.isfile(path):
            return {posix_basename(path): int(fs.size(path) or 0)}
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        found = {}
    except Exception as exc:
        raise StoreError(f"Cannot list {url!r}: {_describe(exc)}") from exc
    if not found and not _exists(fs, path):
        raise StoreError(f"No such file or folder: {url!r}.")
    prefix = path.rstrip("/") + "/"
    sizes = {}
    for name, entry in found.items():
        name = str(name)
        if name.startswith(prefix):
            rel = check_member_name(name[len(prefix) :], f"the folder {url!r}")
            sizes[rel] = int(entry.get("size") or 0)
    return sizes


def _modified(entry: dict[str, Any]) -> datetime | None:
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = entry.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
    return None


def _callback(advance: Callable[[int], None]) -> Any:
    from fsspec.callbacks import Callback

    class _Forward(Callback):  # type: ignore[misc]
        """Forwards byte increments to the shared progress bar."""

        def __init__(self) -> None:
            super().__init__()
            self._seen = 0

        def call(self, *args: Any, **kwargs: Any) -> None:
            delta = int(self.value or 0) - self._seen
            if delta > 0:
                self._seen += delta
                advance(delta)

    return _Forward()


def _download(
    fs: fsspec.AbstractFileSystem, path: str, target: Path, advance: Callable[[int], None]
) -> None:
    with atomic_path(target) as tmp:
        if protocol_of(fs.unstrip_protocol(path)) == "file":
            _call(shutil.copyfile, path, tmp, what=f"copy '{path}'")
            advance(tmp.stat().st_size)
        else:
            _call(fs.get_file, path, str(tmp), callback=_callback(advance), what=f"get {path!r}")


def _upload(
    fs: fsspec.AbstractFileSystem, source: Path, path: str, advance: Callable[[int], None]
) -> None:
    parent = path.rstrip("/").rpartition("/")[0]
    if parent:
        with contextlib.suppress(Exception):
            fs.makedirs(parent, exist_ok=True)
    _call(fs.put_file, str(source), path, callback=_callback(advance), what=f"put '{source}'")


@contextlib.contextmanager
def _progress(total: int, progress: bool | None, label: str) -> Iterator[Callable[[int], None]]:
    """A function advancing the transfer's progress bar by N bytes."""
    with TransferProgress(progress, label, transient=False) as bar:
        bar.start(total)
        yield bar.advance
