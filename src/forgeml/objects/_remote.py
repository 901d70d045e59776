"""A :class:`Repo` on S3 or any fsspec URL.

Layout under the URL::

    forgeml-repo.json       marks the repo (format and version)
    objects/<id>.dry        one archive per object
    index/<id>.json         one index record per object (its row of the local index)

No remote file is ever rewritten by two writers: each object has its own
archive and record, so writers on many machines do not lose each other's
updates. Reads query a local SQLite mirror (in the cache folder) that one
listing of ``index/`` brings up to date; archives load through
:func:`forgeml.store.localize_cached`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from forgeml._core._errors import ObjectError
from forgeml.objects._archive import save_object
from forgeml.objects._object import Object
from forgeml.objects._repo import OBJECTS, SUFFIX, Repo, RepoEntry

MARKER = "forgeml-repo.json"
INDEX_DIR = "index"
_MARKER_DATA = {"format": "forgeml.repo", "version": 1}
_ROW_FIELDS = ("dry_id", "cls", "definition", "classes", "tags", "file", "created")


class RemoteRepo(Repo):
    """A :class:`Repo` whose archives and index records live at a URL (``s3://...``)."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = False,
        allow: Iterable[str] | None = None,
        trust: bool = False,
        timeout: float = 60.0,
    ) -> None:
        from forgeml.store import get_filesystem
        from forgeml.store._cache import cache_dir

        self._url = str(url).rstrip("/")
        self._fs, self._root = get_filesystem(self._url)
        marker = f"{self._root}/{MARKER}"
        if not self._fs.exists(marker):
            if not create:
                raise ObjectError(
                    f"'{self._url}' has no {MARKER}, so it is not a forgeml repo. Pass "
                    f"create=True to create one: Repo({self._url!r}, create=True)."
                )
            self._fs.pipe_file(marker, json.dumps(_MARKER_DATA).encode())
        mirror = cache_dir() / "repos" / hashlib.sha256(self._url.encode()).hexdigest()[:32]
        super().__init__(mirror, create=True, allow=allow, trust=trust, timeout=timeout)
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS remote_rows "
            "(name TEXT PRIMARY KEY, version TEXT, dry_id TEXT NOT NULL)"
        )

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"Repo({self._url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "url": self._url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from forgeml.store import get_filesystem

        super().__setstate__(state)
        self._url = state["url"]
        self._fs, self._root = get_filesystem(self._url)

    # ----------------------------------------------------------------- writing

    def _write_archive(self, obj: Object, file: str) -> None:
        buffer = io.BytesIO()
        save_object(obj, buffer)
        self._fs.pipe_file(f"{self._root}/{file}", buffer.getvalue())

    def _commit(self, rows: Sequence[tuple[Any, ...]]) -> None:
        for row in rows:
            record = dict(zip(_ROW_FIELDS, row, strict=True))
            for key in ("definition", "classes", "tags"):
                record[key] = json.loads(record[key])
            self._fs.pipe_file(self._record(row[5]), json.dumps(record).encode())
        super()._commit(rows)

    def _remove_files(self, files: Sequence[str]) -> None:
        for file in files:
            for path in (self._record(file), f"{self._root}/{file}"):
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm(path)

    def _record(self, file: str) -> str:
        name = file.removeprefix(f"{OBJECTS}/").removesuffix(SUFFIX)
        return f"{self._root}/{INDEX_DIR}/{name}.json"

    # ----------------------------------------------------------------- reading

    def _refresh(self) -> None:
        """Fetch index records added or changed since the last read; drop removed ones."""
        folder = f"{self._root}/{INDEX_DIR}"
        self._fs.invalidate_cache(folder)
        try:
            listing = self._fs.ls(folder, detail=True)
        except FileNotFoundError:
            listing = []
        remote: dict[str, tuple[str, str]] = {}  # name -> (path, version)
        for info in listing:
            path = str(info["name"])
            name = path.rsplit("/", 1)[-1]
            if info.get("type") == "file" and name.endswith(".json"):
                version = info.get("ETag") or info.get("etag") or info.get("mtime")
                remote[name] = (path, f"{version}:{info.get('size')}")
        conn = self._conn()
        known = {
            name: (version, dry_id)
            for name, version, dry_id in conn.execute(
                "SELECT name, version, dry_id FROM remote_rows"
            )
        }
        changed = [n for n, (_, version) in remote.items() if known.get(n, (None,))[0] != version]
        gone = [n for n in known if n not in remote]
        if not changed and not gone:
            return
        contents = self._fs.cat([remote[n][0] for n in changed]) if changed else {}
        rows, versions = [], []
        for name in changed:
            path, version = remote[name]
            data = contents.get(path) if isinstance(contents, dict) else contents
            if isinstance(data, Exception) or data is None:
                continue  # removed between the listing and the read
            rows.append(self._row(name, data))
            versions.append((name, version, rows[-1][0]))
        with self._write() as conn:
            stale = [known[n][1] for n in gone]
            stale += [
                known[n][1] for n, _, dry_id in versions if n in known and known[n][1] != dry_id
            ]
            for dry_id in stale:
                conn.execute("DELETE FROM object_classes WHERE dry_id = ?", (dry_id,))
                conn.execute("DELETE FROM objects WHERE dry_id = ?", (dry_id,))
            conn.executemany("DELETE FROM remote_rows WHERE name = ?", [(n,) for n in gone])
            self._insert(conn, rows)
            conn.executemany(
                "INSERT INTO remote_rows (name, version, dry_id) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
                "dry_id = excluded.dry_id",
                versions,
            )

    def _row(self, name: str, data: bytes) -> tuple[Any, ...]:
        try:
            record = json.loads(data)
            row = tuple(record[key] for key in _ROW_FIELDS)
        except (ValueError, KeyError, TypeError) as exc:
            raise ObjectError(
                f"The index record '{self._url}/{INDEX_DIR}/{name}' is damaged ({exc!r}). "
                f"Remove it, or the object, and add the object again."
            ) from None
        encode = json.dumps
        return (
            row[0],
            row[1],
            encode(row[2], separators=(",", ":")),
            encode(row[3], separators=(",", ":")),
            encode(row[4]),
            row[5],
            row[6],
        )

    def _entry(
        self,
        row: Sequence[Any],
        encoded: dict[str, Any],
        classes: dict[str, list[str]],
        tags: tuple[str, ...] | None = None,
    ) -> RepoEntry:
        entry = super()._entry(row, encoded, classes, tags)
        return dataclasses.replace(entry, _source=f"{self._url}/{row[5]}")
