"""File fetchers: read-only, indexed access to the files in a folder, an archive or a prefix.

A fetcher lists its *members* (files, named by ``/``-separated paths relative
to its root, sorted) once, when it is made, and opens them one at a time::

    with get_file_fetcher("data/train.tar.gz", is_member=lambda n: n.endswith(".png")) as f:
        for name in f:
            with f.open_member(name) as fh:
                ...

Nothing may escape the root: a member name that is absolute or climbs out with
``..``, and a symlink or hard link whose target lies outside the root, makes
the whole folder or archive refused with a :class:`~forgeml.StoreError` that
names the entry, whether or not ``is_member`` selects it.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import stat
import tarfile
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, overload

from forgeml._core._errors import StoreError, did_you_mean
from forgeml._core._registry import Registry
from forgeml.store._fs import get_filesystem, protocol_of

#: A predicate on member names; the fetcher keeps the names it accepts.
MemberFilter = Callable[[str], bool]

#: Fetcher classes by URL scheme (``"s3"``), path suffix (``".zip"``) or kind (``"dir"``).
#: ``"fsspec"`` serves every other fsspec URL as a prefix. Third parties add entries
#: with :func:`register_fetcher` or the entry-point group ``forgeml.fetchers``.
FETCHERS = Registry("fetchers")
FETCHERS.register("dir", "forgeml.store._fetchers:DirectoryFetcher")
FETCHERS.register("fsspec", "forgeml.store._fetchers:PrefixFetcher")
FETCHERS.register("s3", "forgeml.store._fetchers:PrefixFetcher", hint="pip install 'forgeml[s3]'")
FETCHERS.register(".zip", "forgeml.store._fetchers:ZipFetcher")
for _suffix in (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"):
    FETCHERS.register(_suffix, "forgeml.store._fetchers:TarFetcher")


def register_fetcher(name: str, target: str, *, hint: str = "") -> None:
    """Register a :class:`FileFetcher` subclass at ``target`` (``"package.module:Class"``).

    ``name`` is a URL scheme (``"hf"``: used for ``hf://...``), a path suffix
    (``".7z"``: used for any path or URL ending with it; the longest suffix
    wins) or ``"dir"`` (local folders). The class is imported when first used
    and called as ``cls(url, is_member=...)``. Entries of the entry-point group
    ``forgeml.fetchers`` are registered the same way.
    """
    clean = name.strip().lower()
    if not re.fullmatch(r"\.[a-z0-9][a-z0-9.+_-]*|[a-z][a-z0-9+.-]*", clean):
        raise StoreError(
            f"A fetcher name is a URL scheme like 's3' or a suffix like '.zip'. Got {name!r}."
        )
    FETCHERS.register(clean, target, hint=hint)


def _accept_all(name: str) -> bool:
    return True


def get_file_fetcher(
    path: str | os.PathLike[str], is_member: MemberFilter = _accept_all
) -> FileFetcher:
    """The fetcher for ``path``: a folder, a ``.zip``/``.tar*`` archive, or a URL prefix.

    Archive suffixes are recognized on local paths and URLs alike
    (``s3://bucket/data.zip`` is read in place); any other ``scheme://``
    URL is listed as a prefix through fsspec. ``is_member(name)`` keeps only
    the member names it returns true for.
    """
    url = os.fspath(path)
    kind = _kind_of(url)
    cls = FETCHERS.load(kind)
    fetcher = cls(url, is_member=is_member)
    if not isinstance(fetcher, FileFetcher):
        raise StoreError(
            f"The fetcher registered for {kind!r} ({FETCHERS.entry(kind).target}) made a "
            f"{type(fetcher).__name__}, which is not a forgeml.store.FileFetcher."
        )
    return fetcher


def _kind_of(url: str) -> str:
    lowered = url.lower().rstrip("/")
    suffixes = [n for n in FETCHERS.names() if n.startswith(".") and lowered.endswith(n)]
    if suffixes:
        return max(suffixes, key=len)
    protocol = protocol_of(url)
    if protocol != "file":
        return protocol if protocol in FETCHERS else "fsspec"
    local = Path(_local_path(url))
    if local.is_dir():
        return "dir"
    if local.exists():
        known = ", ".join(n for n in FETCHERS.names() if n.startswith("."))
        raise StoreError(
            f"Cannot read {url!r} as a set of files: it is neither a folder nor an archive "
            f"with a known suffix ({known})."
        )
    raise StoreError(f"No such file or folder: {url!r}.")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.lower().startswith("file://") else url


def check_member_name(name: str, where: str) -> str:
    """``name`` as a clean relative ``/`` path, or :class:`StoreError` if it escapes the root."""
    text = name.replace("\\", "/")
    parts = text.split("/")
    if (
        text.startswith("/")
        or (len(text) >= 2 and text[1] == ":" and text[0].isalpha())  # C:\...
        or ".." in parts
        or "\0" in text
    ):
        raise StoreError(
            f"Refusing {where}: its member {name!r} points outside the root "
            f"(absolute names and '..' are not allowed)."
        )
    return posixpath.normpath(text).lstrip("/") if text not in ("", ".") else text


class FileFetcher(ABC):
    """Read-only access to the files (members) under one root.

    ``len(f)``, ``f[i]`` (a member name, in sorted order), ``iter(f)``,
    ``name in f``, ``f.open_member(name)`` (a binary file object; close it) and
    ``f.read_member(name)``. A fetcher is a context manager; ``close()`` releases
    its archive or connection and makes ``open_member`` fail.
    """

    def __init__(self, url: str, *, is_member: MemberFilter = _accept_all) -> None:
        self.url = url
        self._closed = False
        self._names = sorted({n for n in self._list() if is_member(n)})
        self._index = frozenset(self._names)

    @abstractmethod
    def _list(self) -> list[str]:
        """Every member name (checked with :func:`check_member_name`), in any order."""

    @abstractmethod
    def _open(self, name: str) -> IO[bytes]:
        """Open a member that is known to exist."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release handles; called once by :meth:`close`."""

    @property
    def names(self) -> list[str]:
        """The member names, sorted."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._names[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def open_member(self, name: str) -> IO[bytes]:
        """A binary file object reading member ``name``."""
        if self._closed:
            raise StoreError(f"{type(self).__name__} of {self.url!r} is closed.")
        if name not in self._index:
            raise StoreError(
                f"No member {name!r} in {self.url!r} ({len(self)} members)."
                + did_you_mean(name, self._names)
            )
        return self._open(name)

    def read_member(self, name: str) -> bytes:
        """The whole content of member ``name``."""
        with self.open_member(name) as f:
            return f.read()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> FileFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"{type(self).__name__}({self.url!r}, {len(self)} members{state})"


class DirectoryFetcher(FileFetcher):
    """The files under a local folder (symlinks followed while they stay inside it)."""

    def __init__(self, url: str, *, is_member: MemberFilter = _accept_all) -> None:
        local = Path(_local_path(url))
        if not local.is_dir():
            raise StoreError(f"Not a folder: {url!r}.")
        self.root = local.resolve()
        super().__init__(url, is_member=is_member)

    def _inside(self, path: str | Path, name: str) -> Path:
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            raise StoreError(
                f"Refusing the folder {self.url!r}: its member {name!r} is a symlink to "
                f"'{real}', outside the folder."
            )
        return real

    def _list(self) -> list[str]:
        names: list[str] = []
        # The real folders above each folder walked: a link back to one is a loop.
        above: dict[str, frozenset[Path]] = {str(self.root): frozenset([self.root])}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            rel_dir = os.path.relpath(dirpath, self.root)
            self._inside(dirpath, rel_dir)
            chain = above.pop(dirpath)
            keep = []
            for entry in sorted(dirnames):
                child = os.path.join(dirpath, entry)
                rel = entry if rel_dir == "." else f"{rel_dir}/{entry}"
                real = self._inside(child, rel)
                if real not in chain:
                    above[child] = chain | {real}
                    keep.append(entry)
            dirnames[:] = keep
            for entry in filenames:
                full = os.path.join(dirpath, entry)
                name = entry if rel_dir == "." else f"{rel_dir}/{entry}".replace(os.sep, "/")
                self._inside(full, name)
                try:
                    mode = os.stat(full).st_mode
                except OSError:
                    continue  # a dangling symlink inside the folder: not a file
                if stat.S_ISREG(mode):
                    names.append(name)
        return names

    def _open(self, name: str) -> IO[bytes]:
        # Checked again: a link may have been swapped since the listing.
        real = self._inside(self.root / name, name)
        return open(real, "rb")


class ZipFetcher(FileFetcher):
    """The files in a ``.zip`` archive, local or at any fsspec URL (read in place)."""

    def __init__(self, url: str, *, is_member: MemberFilter = _accept_all) -> None:
        self._file: IO[bytes] | None = None
        try:
            self._file = _open_binary(url)
            self._zip = zipfile.ZipFile(self._file)
        except zipfile.BadZipFile as exc:
            self._close_file()
            raise StoreError(f"Cannot read {url!r} as a zip archive: {exc}.") from exc
        except BaseException:
            self._close_file()
            raise
        self._by_name: dict[str, zipfile.ZipInfo] = {}
        try:
            super().__init__(url, is_member=is_member)
        except BaseException:
            self._close()
            raise

    def _list(self) -> list[str]:
        where = f"the zip archive {self.url!r}"
        for info in self._zip.infolist():
            name = check_member_name(info.filename, where)
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                target = self._zip.read(info).decode("utf-8", "replace")
                _check_link(name, target, where)
            self._by_name[name] = info
        return list(self._by_name)

    def _open(self, name: str) -> IO[bytes]:
        return self._zip.open(self._by_name[name])

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _close(self) -> None:
        self._zip.close()
        self._close_file()


class TarFetcher(FileFetcher):
    """The files in a tar archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``).

    Members of an uncompressed tar are read in place through their own file
    handle (safe from several threads); members of a compressed tar are
    decompressed whole on ``open_member`` (seeking in a compressed stream
    reads it from the start, so iterate in order).
    """

    def __init__(self, url: str, *, is_member: MemberFilter = _accept_all) -> None:
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        try:
            self._file = _open_binary(url)
            self._tar = tarfile.open(fileobj=self._file, mode="r:*")  # noqa: SIM115 - kept open
        except tarfile.TarError as exc:
            self._close_file()
            raise StoreError(f"Cannot read {url!r} as a tar archive: {exc}.") from exc
        except BaseException:
            self._close_file()
            raise
        self._compressed = self._tar.fileobj is not self._file
        self._by_name: dict[str, tarfile.TarInfo] = {}
        try:
            super().__init__(url, is_member=is_member)
        except BaseException:
            self._close()
            raise

    def _list(self) -> list[str]:
        where = f"the tar archive {self.url!r}"
        try:
            infos = self._tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise StoreError(f"Cannot read {self.url!r} as a tar archive: {exc}.") from exc
        for info in infos:
            name = check_member_name(info.name, where)
            if info.issym():
                _check_link(name, info.linkname, where)
            elif info.islnk():
                target = info.linkname.replace("\\", "/")
                if target.startswith("/") or ".." in posixpath.normpath(target).split("/"):
                    raise StoreError(
                        f"Refusing {where}: its member {name!r} is a hard link to "
                        f"{info.linkname!r}, outside the archive."
                    )
            if info.isfile() or info.issym() or info.islnk():
                self._by_name[name] = info
        # Links must lead to a regular file in the archive to be members.
        return [n for n in self._by_name if self._resolve(n) is not None]

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        info: tarfile.TarInfo | None = self._by_name.get(name)
        for _ in range(40):  # link chains, bounded
            if info is None or info.isfile():
                return info
            if info.issym():
                base = posixpath.dirname(name)
                name = posixpath.normpath(posixpath.join(base, info.linkname))
            else:
                name = posixpath.normpath(info.linkname)
            info = self._by_name.get(name)
        return None

    def _open(self, name: str) -> IO[bytes]:
        info = self._resolve(name)
        if info is None:  # pragma: no cover - _list keeps only resolvable names
            raise StoreError(f"Member {name!r} of {self.url!r} is a dangling link.")
        if not self._compressed and not info.issparse():
            raw = _Slice(_open_binary(self.url), info.offset_data, info.size)
            return io.BufferedReader(raw)
        with self._lock:
            extracted = self._tar.extractfile(info)
            data = extracted.read() if extracted is not None else b""
        return io.BytesIO(data)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _close(self) -> None:
        self._tar.close()
        self._close_file()


class PrefixFetcher(FileFetcher):
    """The objects under a URL prefix of any fsspec filesystem (``s3://bucket/data/``)."""

    def __init__(
        self, url: str, *, is_member: MemberFilter = _accept_all, **storage_options: Any
    ) -> None:
        self._fs, path = get_filesystem(url, **storage_options)
        self._fs.invalidate_cache()  # a reused instance may hold an outdated listing
        self._prefix = path.rstrip("/")
        super().__init__(url, is_member=is_member)

    def _list(self) -> list[str]:
        where = f"the prefix {self.url!r}"
        try:
            found = self._fs.find(self._prefix)
        except FileNotFoundError:
            found = []
        except Exception as exc:
            raise StoreError(f"Cannot list {self.url!r}: {exc}") from exc
        start = len(self._prefix) + 1
        names = []
        for path in found:
            path = str(path)
            if not path.startswith(self._prefix + "/"):
                continue
            names.append(check_member_name(path[start:], where))
        return names

    def _open(self, name: str) -> IO[bytes]:
        try:
            handle: IO[bytes] = self._fs.open(f"{self._prefix}/{name}", "rb")
        except Exception as exc:
            raise StoreError(f"Cannot open member {name!r} of {self.url!r}: {exc}") from exc
        return handle


def _check_link(name: str, target: str, where: str) -> None:
    text = target.replace("\\", "/")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), text))
    if text.startswith("/") or joined == ".." or joined.startswith("../"):
        raise StoreError(
            f"Refusing {where}: its member {name!r} is a symlink to {target!r}, "
            f"outside the archive."
        )


def _open_binary(url: str) -> IO[bytes]:
    if protocol_of(url) == "file":
        try:
            return open(_local_path(url), "rb")
        except FileNotFoundError as exc:
            raise StoreError(f"No such file: {url!r}.") from exc
    fs, path = get_filesystem(url)
    fs.invalidate_cache(path)
    try:
        handle: IO[bytes] = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise StoreError(f"No such file: {url!r}.") from exc
    return handle


class _Slice(io.RawIOBase):
    """``size`` bytes of a binary file from ``start``; owns (and closes) the file."""

    def __init__(self, raw: IO[bytes], start: int, size: int) -> None:
        super().__init__()
        self._raw = raw
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            return 0
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(view[:n]) if hasattr(self._raw, "readinto") else None
        if got is None:
            data = self._raw.read(n)
            got = len(data)
            view[:got] = data
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
