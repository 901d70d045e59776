"""A two-level cache of remote objects: a persistent folder, a node-local copy, and memory.

Layout of a cache root (``$FORGEML_CACHE``, default ``~/.cache/forgeml``, and
``$FORGEML_EPHEMERAL_CACHE`` when set)::

    objects/<u[:2]>/<u>/<v>/<name>          the object's bytes
    objects/<u[:2]>/<u>/<v>/.entry.json     url, version, size, sha256
    objects/<u[:2]>/<u>/.<v>.lock           flock()ed by the process filling <v>
    objects/<u[:2]>/<u>/.<v>.tmp-<random>/      an entry being filled (never served)

``u`` is the SHA-256 of the exact URL and ``v`` that of its version (ETag,
size and modification time from ``fs.info``), so a lookup is one path
computed from the key: there are no prefix matches, and a changed object gets
a new entry. An entry is filled in a temp folder (bytes hashed as they
arrive, size and sha256 checked), then renamed into place in one step: a
folder ``<v>`` that exists is complete. A process killed midway leaves only a
temp folder, which the next filler removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from forgeml._core._errors import StoreError
from forgeml._core._files import fsync_dir
from forgeml._core._hashing import HashingWriter, sha256_file
from forgeml.store._fs import get_filesystem, protocol_of
from forgeml.store._progress import ProgressArg, TransferProgress

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process locks
    fcntl = None  # type: ignore[assignment]

#: The persistent cache folder when ``$FORGEML_CACHE`` is not set.
DEFAULT_CACHE = "~/.cache/forgeml"
#: Bytes read at a time from a remote object.
REMOTE_CHUNK = 8 << 20

_META = ".entry.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{1,64}")


# ---------------------------------------------------------------------------- folders


def cache_dir() -> Path:
    """The persistent cache folder: ``$FORGEML_CACHE``, or ``~/.cache/forgeml``."""
    return Path(os.environ.get("FORGEML_CACHE") or DEFAULT_CACHE).expanduser().absolute()


def ephemeral_cache_dir() -> Path | None:
    """The node-local cache folder ``$FORGEML_EPHEMERAL_CACHE``, or None when unset."""
    value = os.environ.get("FORGEML_EPHEMERAL_CACHE")
    return Path(value).expanduser().absolute() if value else None


def is_local(url: str | os.PathLike[str]) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return isinstance(url, os.PathLike) or protocol_of(url) in ("file", "local")


def local_path(url: str | os.PathLike[str]) -> Path:
    """The path a plain path or ``file://`` URL names."""
    if isinstance(url, os.PathLike):
        return Path(url).expanduser()
    if "://" in url:
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(
                f"file:// URLs name a path on this machine; {url!r} names host "
                f"{parsed.netloc!r}. Use file:///ABSOLUTE/PATH."
            )
        return Path(urllib.parse.unquote(parsed.path))
    return Path(url).expanduser()


def entry_name(url: str) -> str:
    """The file name an object gets in the cache: the URL's last segment, made safe."""
    path = urllib.parse.urlparse(url).path if "://" in url else url
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    if name in ("", ".", "..") or name == _META:
        name = f"data{name.lstrip('.')}" if name not in (".", "..") else "data"
    if len(name) > 200:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem[: 190 - len(suffix)]}.{suffix}" if dot and len(suffix) < 10 else name[:200]
    return name


def check_sha256(value: str | None, *, prefix: bool = False, what: str = "sha256=") -> str | None:
    """``value`` lowercased, or a :class:`StoreError` when it is not a (prefix of a) digest."""
    if value is None:
        return None
    digest = str(value).strip().lower()
    if not (_HEX if prefix else _SHA256).fullmatch(digest):
        expected = "1 to 64" if prefix else "64"
        raise StoreError(
            f"{what} must be {expected} hexadecimal digits (a SHA-256 digest, as "
            f"`sha256sum FILE` prints it). Got {value!r}."
        )
    return digest


# ---------------------------------------------------------------------------- entries


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where the entry for one (url, version) lives under one cache root."""

    root: Path
    url: str
    version: dict[str, Any]
    name: str

    @functools.cached_property
    def url_dir(self) -> Path:
        u = hashlib.sha256(self.url.encode("utf-8")).hexdigest()
        return self.root / "objects" / u[:2] / u

    @functools.cached_property
    def key(self) -> str:
        text = json.dumps(self.version, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    @property
    def folder(self) -> Path:
        return self.url_dir / self.key

    @property
    def data(self) -> Path:
        return self.folder / self.name

    @property
    def lock(self) -> Path:
        return self.url_dir / f".{self.key}.lock"


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _lookup(slot: _Slot) -> dict[str, Any] | None:
    """The metadata of a complete, intact entry for exactly this url and version, or None."""
    meta = _read_meta(slot.folder)
    if (
        meta is None
        or meta.get("url") != slot.url
        or meta.get("version") != _jsonable(slot.version)
    ):
        return None
    data = slot.folder / str(meta.get("name", ""))
    try:
        size = data.stat().st_size
    except OSError:
        return None
    if size != meta.get("size"):
        return None
    return meta


def _jsonable(version: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(version), sort_keys=True, default=str))


def _mismatch(url: str, expected: str, actual: str, *, prefix: bool, cached: bool) -> StoreError:
    what = "a sha256 starting with" if prefix else "sha256"
    where = "The cached copy of" if cached else "The download of"
    return StoreError(
        f"{where} {url!r} does not have the expected {what} {expected}: its sha256 is "
        f"{actual}. The file was deleted and not cached. Check the checksum you passed, and "
        f"whether the object was replaced at its source."
    )


def _check_digest(
    url: str, actual: str, sha256: str | None, sha256_prefix: str | None, *, cached: bool
) -> None:
    if sha256 is not None and actual != sha256:
        raise _mismatch(url, sha256, actual, prefix=False, cached=cached)
    if sha256_prefix is not None and not actual.startswith(sha256_prefix):
        raise _mismatch(url, sha256_prefix, actual, prefix=True, cached=cached)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released by the kernel if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Remove an entry folder: renamed aside first, so it vanishes in one step."""
    if not path.exists():
        return
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}-{threading.get_ident()}")
    try:
        os.replace(path, trash)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    shutil.rmtree(trash, ignore_errors=True)


#: ``fetch(out, progress) -> expected size or None``: write the object's bytes to ``out``.
Fetcher = Callable[["Writable", "TransferProgress"], "int | None"]


class Writable(Protocol):
    """Where a fetcher writes: a binary stream that hashes what passes."""

    def write(self, data: bytes, /) -> int: ...


def fill(
    slot: _Slot,
    fetch: Fetcher,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: ProgressArg = False,
    force: bool = False,
    source: str | None = None,
) -> dict[str, Any]:
    """The entry for ``slot``, fetched with ``fetch`` unless a complete one exists.

    One process fills an entry at a time (a ``flock`` per entry); the others
    wait, then find it complete. Returns the entry's metadata.
    """
    if not force:
        meta = _lookup(slot)
        if meta is not None:
            return _checked_hit(slot, meta, sha256, sha256_prefix)
    with _locked(slot.lock):
        meta = _lookup(slot)
        if meta is not None and not force:
            return _checked_hit(slot, meta, sha256, sha256_prefix)
        for leftover in slot.url_dir.glob(f".{slot.key}.tmp-*"):  # from a killed filler
            shutil.rmtree(leftover, ignore_errors=True)
        _remove(slot.folder)  # forced, or incomplete/damaged
        tmp = Path(tempfile.mkdtemp(prefix=f".{slot.key}.tmp-", dir=slot.url_dir))
        try:
            with (
                TransferProgress(progress, slot.name) as bar,
                open(tmp / slot.name, "wb") as raw,
                HashingWriter(raw) as writer,
            ):
                expected_size = fetch(writer, bar)
                size, actual = writer.tell(), writer.hexdigest()
                raw.flush()
                os.fsync(raw.fileno())
            if expected_size is not None and size != expected_size:
                raise StoreError(
                    f"The download of {slot.url!r} stopped after {size} of {expected_size} "
                    f"bytes (the connection closed early, or the object changed meanwhile). "
                    f"Nothing was cached; try again."
                )
            _check_digest(slot.url, actual, sha256, sha256_prefix, cached=False)
            meta = {
                "url": slot.url,
                "version": _jsonable(slot.version),
                "name": slot.name,
                "size": size,
                "sha256": actual,
                "source": source or slot.url,
                "created": time.time(),
            }
            with open(tmp / _META, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.replace(tmp, slot.folder)  # the entry appears complete, in one step
            except OSError:
                # Only if the lock file was removed (clear_cache) and another filler won.
                existing = _lookup(slot)
                if existing is None:
                    raise
                meta = existing
            fsync_dir(slot.url_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _drop_other_versions(slot)
        return meta


def _checked_hit(
    slot: _Slot, meta: dict[str, Any], sha256: str | None, sha256_prefix: str | None
) -> dict[str, Any]:
    try:
        _check_digest(slot.url, str(meta.get("sha256")), sha256, sha256_prefix, cached=True)
    except StoreError:
        with _locked(slot.lock):
            _remove(slot.folder)
        raise
    return meta


def _drop_other_versions(slot: _Slot) -> None:
    """Remove this URL's entries for versions the source no longer has (stale)."""
    for folder in slot.url_dir.iterdir():
        if folder.name != slot.key and not folder.name.startswith(".") and folder.is_dir():
            _remove(folder)
            (slot.url_dir / f".{folder.name}.lock").unlink(missing_ok=True)


# ---------------------------------------------------------------------------- progress


def copy_stream(source: IO[bytes], out: Writable, progress: TransferProgress) -> None:
    """Copy ``source`` to ``out`` in chunks, reporting progress."""
    while chunk := source.read(REMOTE_CHUNK):
        out.write(chunk)
        progress.advance(len(chunk))


# ---------------------------------------------------------------------------- remote objects


def _version(info: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies one state of an object: ETag, size and modification time."""
    etag = info.get("ETag") or info.get("etag") or info.get("e_tag")
    mtime = None
    for key in ("mtime", "LastModified", "last_modified", "modified", "updated", "created"):
        if info.get(key) is not None:
            mtime = info[key]
            break
    size = info.get("size")
    return {
        "etag": str(etag).strip('"') if etag else None,
        "size": int(size) if size is not None else None,
        "mtime": str(mtime) if mtime is not None else None,
    }


def _stat(url: str) -> tuple[Any, str, dict[str, Any]]:
    """The filesystem, path and fresh ``info`` of a remote object."""
    fs, path = get_filesystem(url)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)  # listings cached by fsspec must not hide a change
    try:
        info = dict(fs.info(path))
    except FileNotFoundError:
        raise StoreError(
            f"No object at {url!r}. Check the bucket and key (lookups are exact: no prefix "
            f"or near match is used)."
        ) from None
    except PermissionError as exc:
        raise StoreError(f"Not allowed to read {url!r}: {exc}. Check the credentials.") from exc
    except Exception as exc:
        raise StoreError(f"Cannot read {url!r}: {type(exc).__name__}: {exc}") from exc
    if info.get("type") == "directory":
        raise StoreError(
            f"{url!r} is a folder; localize_cached copies single objects. Name a file in it."
        )
    return fs, path, info


def _fs_fetcher(fs: Any, path: str, url: str, size: int | None) -> Fetcher:
    def fetch(out: Writable, progress: TransferProgress) -> int | None:
        progress.start(size)
        try:
            with fs.open(path, "rb", block_size=REMOTE_CHUNK, cache_type="none") as source:
                copy_stream(source, out, progress)
        except FileNotFoundError:
            raise StoreError(f"{url!r} disappeared while it was being read.") from None
        except OSError:
            raise
        except Exception as exc:
            raise StoreError(f"Reading {url!r} failed: {type(exc).__name__}: {exc}") from exc
        return size

    return fetch


def _file_fetcher(path: Path) -> Fetcher:
    def fetch(out: Writable, progress: TransferProgress) -> int | None:
        size = path.stat().st_size
        progress.start(size)
        with open(path, "rb") as source:
            copy_stream(source, out, progress)
        return size

    return fetch


def localize_entry(
    url: str,
    *,
    fetch: Fetcher | None = None,
    version: Mapping[str, Any] | None = None,
    name: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: ProgressArg = None,
    root: Path | None = None,
    force: bool = False,
    source: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The local path of ``url``'s bytes (through both caches) and its entry's metadata.

    Without ``fetch``, ``url`` is read through fsspec and its version comes from
    ``fs.info``. With ``fetch`` (the hub's HTTP and Google Drive readers), the
    entry is keyed by ``url`` and ``version`` as given. ``root`` replaces the
    persistent cache folder; ``force`` fetches again even when an entry exists.
    """
    sha256 = check_sha256(sha256)
    sha256_prefix = check_sha256(sha256_prefix, prefix=True, what="The sha256 prefix")
    if fetch is None:
        fs, path, info = _stat(url)
        version = _version(info)
        fetch = _fs_fetcher(fs, path, url, version["size"])
    slot = _Slot(root or cache_dir(), url, dict(version or {}), name or entry_name(url))
    ephemeral = ephemeral_cache_dir()
    if ephemeral is not None and ephemeral != slot.root:
        near = dataclasses.replace(slot, root=ephemeral)
        if not force:
            meta = _lookup(near)
            if meta is not None:
                _checked_hit(near, meta, sha256, sha256_prefix)
                return near.folder / meta["name"], meta
    meta = fill(
        slot,
        fetch,
        sha256=sha256,
        sha256_prefix=sha256_prefix,
        progress=progress,
        force=force,
        source=source,
    )
    persistent = slot.folder / meta["name"]
    if ephemeral is None or ephemeral == slot.root:
        return persistent, meta
    near = dataclasses.replace(slot, root=ephemeral, name=meta["name"])
    near_meta = fill(
        near,
        _file_fetcher(persistent),
        sha256=meta["sha256"],
        force=force,
        source=meta.get("source"),
    )
    return near.folder / near_meta["name"], near_meta


def localize_cached(
    url: str | os.PathLike[str], *, sha256: str | None = None, progress: ProgressArg = None
) -> Path:
    """A local path holding the bytes of ``url`` (any fsspec URL: ``s3://``, ``gs://``, ...).

    Plain paths and ``file://`` URLs return themselves (checked against
    ``sha256`` when given). Remote objects are copied into the persistent
    cache (``$FORGEML_CACHE``, default ``~/.cache/forgeml``) and, when
    ``$FORGEML_EPHEMERAL_CACHE`` is set (node-local scratch), from there into
    that folder too; the ephemeral copy's path is returned then.

    Entries are keyed by the exact URL and the object's version (ETag, size,
    modification time from ``fs.info``, asked on every call): a changed object
    is fetched again. Bytes are hashed as they arrive; an entry whose size or
    ``sha256`` is wrong never enters the cache. Processes filling the same
    entry at once wait for one another and share one download. ``progress``:
    None shows a rich bar for objects of 16 MiB or more on a terminal, True
    always, False never; a callable gets ``(bytes_done, bytes_total)``.
    """
    if is_local(url):
        path = local_path(url)
        if not path.is_file():
            reason = "is not a file" if path.exists() else "does not exist"
            raise StoreError(f"The local path '{path}' {reason}. Check the path.")
        expected = check_sha256(sha256)
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise StoreError(
                    f"'{path}' does not have the expected sha256 {expected}: its sha256 is "
                    f"{actual}. Check the checksum you passed, or the file."
                )
        return path
    return localize_entry(str(url), sha256=sha256, progress=progress)[0]


# ---------------------------------------------------------------------------- memory


@dataclasses.dataclass
class _Held:
    data: bytes
    version: dict[str, Any]
    sha256: str
    checked: float


class MemoryCache:
    """A thread-safe LRU of small objects' bytes, bounded by their total size.

    Objects larger than ``max_object_bytes`` are not kept; the least recently
    used objects are evicted once the total would exceed ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 64 << 20, max_object_bytes: int = 1 << 20) -> None:
        if max_bytes < 0 or max_object_bytes < 0:
            raise StoreError(
                f"MemoryCache limits must be at least 0 bytes. Got max_bytes={max_bytes}, "
                f"max_object_bytes={max_object_bytes}."
            )
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self._items: OrderedDict[str, _Held] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> bytes | None:
        """The bytes held for ``key`` (now the most recently used), or None."""
        held = self._get(key)
        return None if held is None else held.data

    def put(self, key: str, data: bytes) -> bool:
        """Hold ``data`` for ``key``; False when it is too large to keep."""
        return self._put(key, bytes(data), {}, hashlib.sha256(data).hexdigest())

    def discard(self, key: str) -> None:
        with self._lock:
            held = self._items.pop(key, None)
            if held is not None:
                self._nbytes -= len(held.data)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def stats(self) -> dict[str, int]:
        """Entries, bytes, limits, hits, misses and evictions so far."""
        return {
            "entries": len(self._items),
            "bytes": self._nbytes,
            "max_bytes": self.max_bytes,
            "max_object_bytes": self.max_object_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }

    def _get(self, key: str) -> _Held | None:
        with self._lock:
            held = self._items.get(key)
            if held is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return held

    def _put(self, key: str, data: bytes, version: dict[str, Any], sha256: str) -> bool:
        size = len(data)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= len(old.data)
            if size > self.max_object_bytes or size > self.max_bytes:
                return False
            while self._items and self._nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= len(evicted.data)
                self.evictions += 1
            self._items[key] = _Held(data, version, sha256, time.monotonic())
            self._nbytes += size
            return True


_memory = MemoryCache()


def _memory_key(url: str | os.PathLike[str]) -> str:
    # Local files are keyed by absolute path: "labels.txt" differs from one folder to the next.
    return str(local_path(url).absolute()) if is_local(url) else str(url)


def memory_cache() -> MemoryCache:
    """The process-wide :class:`MemoryCache` that :func:`read_cached` uses by default."""
    return _memory


def read_cached(
    url: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    max_age: float = 60.0,
    memory: MemoryCache | None = None,
) -> bytes:
    """The bytes of ``url``, from memory when read recently, else through the disk cache.

    Small objects (up to ``memory.max_object_bytes``, 1 MiB by default) are
    kept in an in-memory LRU bounded by total bytes (64 MiB by default) and
    served from it without asking the source for ``max_age`` seconds; after
    that the source is asked whether the object changed (``max_age=0``: every
    time). Larger objects go through :func:`localize_cached` each time.
    """
    memory = memory if memory is not None else _memory
    local = is_local(url)
    key = _memory_key(url)
    expected = check_sha256(sha256)
    held = memory._get(key)
    if held is not None and expected is not None and held.sha256 != expected:
        memory.discard(key)
        held = None
    if held is not None and time.monotonic() - held.checked <= max_age:
        return held.data
    if local:
        path = Path(key)
        try:
            st = path.stat()
        except OSError:
            localize_cached(key)  # raises the error that says what is wrong
            raise
        version = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
        if held is not None and held.version == version:
            held.checked = time.monotonic()
            return held.data
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise StoreError(
                f"'{path}' does not have the expected sha256 {expected}: its sha256 is "
                f"{digest}. Check the checksum you passed, or the file."
            )
    else:
        fs, remote, info = _stat(key)
        version = _version(info)
        if held is not None and held.version == version:
            held.checked = time.monotonic()
            return held.data
        fetch = _fs_fetcher(fs, remote, key, version["size"])
        path, meta = localize_entry(
            key, fetch=fetch, version=version, sha256=expected, progress=False
        )
        data = path.read_bytes()
        digest = str(meta["sha256"])
    memory._put(key, data, version, digest)
    return data


# ---------------------------------------------------------------------------- housekeeping


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """What the caches hold: see :func:`cache_info`."""

    root: Path
    entries: int
    bytes: int
    ephemeral_root: Path | None
    ephemeral_entries: int
    ephemeral_bytes: int
    memory: dict[str, int]


def _entries(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    objects = root / "objects"
    if not objects.is_dir():
        return
    for folder in objects.glob("*/*/*"):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        meta = _read_meta(folder)
        if meta is not None:
            yield folder, meta


def _usage(root: Path | None) -> tuple[int, int]:
    if root is None:
        return 0, 0
    count = total = 0
    for _, meta in _entries(root):
        count += 1
        total += int(meta.get("size", 0))
    return count, total


def cache_info() -> CacheInfo:
    """Entries and bytes in the persistent and ephemeral caches, and the memory LRU's stats."""
    root, ephemeral = cache_dir(), ephemeral_cache_dir()
    entries, size = _usage(root)
    eph_entries, eph_size = _usage(ephemeral)
    return CacheInfo(root, entries, size, ephemeral, eph_entries, eph_size, _memory.stats())


def clear_cache(
    url: str | None = None, *, disk: bool = True, memory: bool = True, root: Path | None = None
) -> int:
    """Empty the caches, or drop only ``url``'s entries; return the disk entries removed.

    ``disk=False`` keeps the folders, ``memory=False`` the in-memory LRU.
    ``root`` clears that folder instead of ``$FORGEML_CACHE`` (the ephemeral
    cache is cleared too). Do not clear a cache other processes are filling.
    """
    if memory:
        if url is None:
            _memory.clear()
        else:
            _memory.discard(_memory_key(url))
    removed = 0
    if not disk:
        return removed
    roots = [root or cache_dir(), ephemeral_cache_dir()]
    for base in dict.fromkeys(r for r in roots if r is not None):
        if url is None:
            removed += sum(1 for _ in _entries(base))
            _remove(base / "objects")
            continue
        url_dir = _Slot(base, url, {}, "x").url_dir
        if url_dir.is_dir():
            removed += sum(
                1 for f in url_dir.iterdir() if not f.name.startswith(".") and f.is_dir()
            )
            _remove(url_dir)
    return removed
