"""``Repo``: a directory of object archives with a SQLite index for queries.

Layout::

    <dir>/index.sqlite          the index (SQLite, WAL mode; schema version in user_version)
    <dir>/objects/<id>.dry      one archive per object (save_object format)

The index holds every object's class, encoded definition, tags, file and
creation time, plus the class paths of its MRO, so :meth:`Repo.get` selects
objects without opening an archive or importing a stored class. Several
processes may write at once: every write is one ``BEGIN IMMEDIATE``
transaction, and an archive is written (atomically) before its index row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from forgeml._core._errors import ObjectError
from forgeml.objects._archive import load_object, save_object
from forgeml.objects._object import Object, ObjectDef
from forgeml.objects._selector import Selector, class_map

#: The index schema this forgeml writes; newer indexes are refused.
SCHEMA_VERSION = 1
INDEX = "index.sqlite"
OBJECTS = "objects"
SUFFIX = ".dry"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    dry_id     TEXT PRIMARY KEY,
    cls        TEXT NOT NULL,
    definition TEXT NOT NULL,
    classes    TEXT NOT NULL,
    tags       TEXT NOT NULL DEFAULT '[]',
    file       TEXT NOT NULL,
    created    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS object_classes (
    dry_id TEXT NOT NULL,
    cls    TEXT NOT NULL,
    PRIMARY KEY (cls, dry_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS object_classes_dry_id ON object_classes (dry_id);
"""
_COLUMNS = "o.dry_id, o.cls, o.definition, o.classes, o.tags, o.file, o.created"
_UPSERT = """
INSERT INTO objects (dry_id, cls, definition, classes, tags, file, created)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dry_id) DO UPDATE SET
    cls = excluded.cls, definition = excluded.definition, classes = excluded.classes,
    tags = excluded.tags, file = excluded.file
"""
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXACT_INT = 2**53

T = TypeVar("T")


@dataclass(frozen=True)
class RepoEntry:
    """One index row of a :class:`Repo`: what ``get(load_objects=False)`` returns.

    Reading it opens no archive; :meth:`load` does.
    """

    #: The object's id.
    dry_id: str
    #: Its class path, ``"pkg.module:Name"``.
    cls: str
    #: Its encoded definition (``ObjectDef.to_dict()``).
    encoded: dict[str, Any] = field(compare=False, repr=False)
    tags: tuple[str, ...]
    #: The archive.
    file: Path
    #: When it was first added (UTC).
    created: dt.datetime
    #: Class path -> MRO class paths, for every Object class in the definition.
    classes: dict[str, list[str]] = field(compare=False, repr=False)
    _allow: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    _trust: bool = field(default=False, compare=False, repr=False)
    _root: Path | None = field(default=None, compare=False, repr=False)
    #: The archive's URL when the repo is remote (it is fetched through the cache).
    _source: str | None = field(default=None, compare=False, repr=False)

    @property
    def mro(self) -> tuple[str, ...]:
        """Class paths of the Object subclasses in the object's MRO."""
        return tuple(self.classes.get(self.cls, [self.cls]))

    def definition(self, *, allow: Iterable[str] | None = None) -> ObjectDef:
        """The :class:`ObjectDef` that builds this object (imports its class)."""
        return ObjectDef.from_dict(self.encoded, allow=self._allow if allow is None else allow)

    def local_file(self) -> Path:
        """The object's archive as a local file, without opening it.

        A remote repo's archive is fetched through the cache; a local one must lie
        inside its repo's ``objects/`` folder and exist. Raises :class:`ObjectError`
        otherwise.
        """
        path = self.file
        root = self._root if self._root is not None else path.parent.parent
        if self._source is not None:
            from forgeml.store import localize_cached

            try:
                path = localize_cached(self._source)
            except Exception as exc:
                raise ObjectError(
                    f"Cannot fetch object {self.dry_id} from '{self._source}': {exc}"
                ) from exc
        elif self._root is not None and not path.resolve().is_relative_to(
            (root / OBJECTS).resolve()
        ):
            raise ObjectError(
                f"The index of repo '{root}' lists object {self.dry_id} in '{path}', outside "
                f"its {OBJECTS}/ folder; refusing to load it. Remove the entry with "
                f"repo.delete({self.dry_id!r})."
            )
        if not path.is_file():
            raise ObjectError(
                f"The index of repo '{root}' lists object {self.dry_id} in '{path}', but that "
                f"file is missing. Remove the stale entry with repo.delete({self.dry_id!r}) "
                f"or 'forgeml repo rm {root} {self.dry_id}'."
            )
        return path

    def load(self, *, allow: Iterable[str] | None = None, trust: bool | None = None) -> Any:
        """Load the object from its archive."""
        path = self.local_file()
        obj = load_object(
            path,
            allow=self._allow if allow is None else allow,
            trust=self._trust if trust is None else trust,
        )
        if getattr(obj, "dry_id", None) != self.dry_id:
            raise ObjectError(
                f"The archive '{path}' holds object {getattr(obj, 'dry_id', None)!r}, but the "
                f"repo index lists it as {self.dry_id!r}. The repo was modified by hand; "
                f"remove the entry and add the object again."
            )
        return obj


class Repo:
    """A directory of stored :class:`Object` archives, queried with :class:`Selector`.

    >>> repo = Repo(directory, create=True)                        # doctest: +SKIP
    >>> repo.add_objects(ObjectDef(Data, 2), 5)                     # doctest: +SKIP
    >>> len(repo.get(Selector(Data, args=(2,))))                    # doctest: +SKIP
    5

    ``allow`` (module prefixes) and ``trust`` are passed to :func:`load_object`
    when objects are loaded. ``timeout`` is how long a writer waits for another.
    """

    def __new__(cls, directory: Any = None, *args: Any, **kwargs: Any) -> Repo:
        """``Repo("s3://bucket/prefix")`` (any non-local URL) makes a remote repo."""
        if cls is Repo and isinstance(directory, str) and "://" in directory:
            from forgeml.store import protocol_of

            if protocol_of(directory) not in ("file", "local"):
                from forgeml.objects._remote import RemoteRepo

                return super().__new__(RemoteRepo)
        return super().__new__(cls)

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        create: bool = False,
        allow: Iterable[str] | None = None,
        trust: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self._dir = Path(directory).expanduser().absolute()
        self._allow = tuple(allow) if allow is not None else None
        self._trust = trust
        self._timeout = timeout
        self._local = threading.local()
        index = self._dir / INDEX
        if not index.is_file():
            if not create:
                what = "does not exist" if not self._dir.exists() else f"has no {INDEX}"
                raise ObjectError(
                    f"Repo directory '{self._dir}' {what}, so it is not a forgeml repo. "
                    f"Pass create=True to create one: Repo({str(directory)!r}, create=True)."
                )
            if self._dir.exists() and not self._dir.is_dir():
                raise ObjectError(f"Cannot create a repo at '{self._dir}': it is a file.")
            (self._dir / OBJECTS).mkdir(parents=True, exist_ok=True)
        self._conn()  # open, check the version, create the schema

    @property
    def directory(self) -> Path:
        return self._dir

    # ------------------------------------------------------------------ connection

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or getattr(local, "pid", None) != os.getpid():
            conn = self._open()
            local.conn = conn
            local.pid = os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        path = self._dir / INDEX
        try:
            conn = sqlite3.connect(path, timeout=self._timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise ObjectError(f"Cannot open the repo index '{path}': {exc}.") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            if version == 0:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                self._check_version(version)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc):
                raise ObjectError(f"Cannot use the repo index '{path}': {exc}.") from None
            raise ObjectError(
                f"The repo index '{path}' stayed locked by another process for more than "
                f"{self._timeout:g} s. Retry, or pass a larger timeout= to Repo."
            ) from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ObjectError(
                f"'{path}' is not a usable forgeml repo index ({exc}). Move it away and "
                f"create the repo again."
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL; SQLite answers "locked" at once (no busy wait) while others hold it."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise ObjectError(
                f"The index of repo '{self._dir}' has schema version {version}; this forgeml "
                f"reads versions up to {SCHEMA_VERSION}. Upgrade forgeml to open it."
            )

    def close(self) -> None:
        """Close this thread's connection to the index (it reopens when needed)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "directory": str(self._dir),
            "allow": self._allow,
            "trust": self._trust,
            "timeout": self._timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._dir = Path(state["directory"])
        self._allow = state["allow"]
        self._trust = state["trust"]
        self._timeout = state["timeout"]
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so writers queue instead of deadlocking."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise ObjectError(
                f"The index of repo '{self._dir}' stayed locked by another writer for "
                f"{self._timeout:g} s ({exc}). Retry, or pass a larger timeout= to Repo."
            ) from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def _file_name(self, dry_id: str) -> str:
        if _SAFE_ID.match(dry_id) and ".." not in dry_id:
            return f"{OBJECTS}/{dry_id}{SUFFIX}"
        return f"{OBJECTS}/{hashlib.sha256(dry_id.encode()).hexdigest()}{SUFFIX}"

    def _store(self, obj: Any, tags: Iterable[str] | str) -> tuple[Any, ...]:
        """Write ``obj``'s archive; return its index row (not yet inserted)."""
        if not isinstance(obj, Object):
            raise ObjectError(
                f"A Repo stores forgeml.Object instances. Got {type(obj).__name__} "
                f"{obj!r:.80}. Derive the class from forgeml.Object."
            )
        definition = obj.definition()
        encoded = definition.to_dict()
        classes = class_map(definition)
        file = self._file_name(obj.dry_id)
        self._write_archive(obj, file)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        return (
            obj.dry_id,
            encoded["cls"],
            json.dumps(encoded, separators=(",", ":")),
            json.dumps(classes, separators=(",", ":")),
            json.dumps(_tags(tags)),
            file,
            created,
        )

    def _write_archive(self, obj: Object, file: str) -> None:
        save_object(obj, self._dir / file)

    def _commit(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Make stored rows visible: insert them into the index."""
        if rows:
            with self._write() as conn:
                self._insert(conn, rows)

    def _remove_files(self, files: Sequence[str]) -> None:
        for file in files:
            path = self._inside(file)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _refresh(self) -> None:
        """Bring the index up to date before a read (a local index always is)."""

    def _insert(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        conn.executemany(_UPSERT, rows)
        conn.executemany("DELETE FROM object_classes WHERE dry_id = ?", [(r[0],) for r in rows])
        conn.executemany(
            "INSERT OR IGNORE INTO object_classes (dry_id, cls) VALUES (?, ?)",
            [(row[0], path) for row in rows for path in json.loads(row[3])[row[1]]],
        )

    def add_object(self, obj: Object, tags: Iterable[str] | str = ()) -> str:
        """Store ``obj`` (replacing an object with the same ``dry_id``); return its id."""
        row = self._store(obj, tags)
        self._commit([row])
        return str(row[0])

    def add_objects(
        self,
        factory: ObjectDef | Callable[[], Object],
        num: int,
        tags: Iterable[str] | str = (),
    ) -> list[Any]:
        """Build ``num`` objects and store them in one transaction; return them.

        ``factory`` is an :class:`ObjectDef` (each build gets a new ``dry_id``) or a
        function of no arguments that returns an Object.
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ObjectError(f"add_objects needs a number of objects >= 0. Got {num!r}.")
        if isinstance(factory, ObjectDef):
            make: Callable[[], Any] = factory.category().build
        elif callable(factory):
            make = factory
        else:
            raise ObjectError(
                f"add_objects needs an ObjectDef or a function that returns an Object. "
                f"Got {type(factory).__name__} {factory!r:.80}."
            )
        objects = [make() for _ in range(num)]
        self._commit([self._store(obj, tags) for obj in objects])
        return objects

    def save(self, obj: Object, *, tags: Iterable[str] | str | None = None) -> None:
        """Save an object that is already in the repo again (after training, say).

        Its tags stay unless ``tags`` is given.
        """
        dry_id = getattr(obj, "dry_id", None)
        self._refresh()
        found = (
            self._conn().execute("SELECT tags FROM objects WHERE dry_id = ?", (dry_id,)).fetchone()
        )
        if found is None:
            raise ObjectError(
                f"Object {dry_id!r} is not in repo '{self._dir}'; use repo.add_object(obj) "
                f"to add it."
            )
        self._commit([self._store(obj, json.loads(found[0]) if tags is None else tags)])

    def delete(self, target: Object | RepoEntry | Selector | str | type) -> int:
        """Remove objects (an Object, entry, id or Selector); return how many were removed."""
        if isinstance(target, Selector | type):
            ids = [e.dry_id for e in self.get(target, load_objects=False)]
        elif isinstance(target, Object | RepoEntry):
            ids = [target.dry_id]
        elif isinstance(target, str):
            ids = [target]
        else:
            raise ObjectError(
                f"Repo.delete takes an Object, a RepoEntry, an id or a Selector. Got "
                f"{type(target).__name__} {target!r:.80}."
            )
        return self._delete_ids(ids)

    def _delete_ids(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        files: list[str] = []
        with self._write() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                files += [
                    r[0]
                    for r in conn.execute(
                        f"SELECT file FROM objects WHERE dry_id IN ({marks})", chunk
                    )
                ]
                conn.execute(f"DELETE FROM object_classes WHERE dry_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM objects WHERE dry_id IN ({marks})", chunk)
        self._remove_files(files)
        return len(files)

    # ------------------------------------------------------------------ reading

    @overload
    def get(
        self,
        selector: Selector | type | str | None = None,
        *,
        load_objects: Literal[True] = True,
        tags: Iterable[str] | str = (),
    ) -> list[Any]: ...

    @overload
    def get(
        self,
        selector: Selector | type | str | None = None,
        *,
        load_objects: Literal[False],
        tags: Iterable[str] | str = (),
    ) -> list[RepoEntry]: ...

    @overload
    def get(
        self,
        selector: Selector | type | str | None = None,
        *,
        load_objects: bool,
        tags: Iterable[str] | str = (),
    ) -> list[Any]: ...

    def get(
        self,
        selector: Selector | type | str | None = None,
        *,
        load_objects: bool = True,
        tags: Iterable[str] | str = (),
    ) -> list[Any]:
        """The objects that ``selector`` selects and that carry every tag in ``tags``.

        In the order they were added. With ``load_objects=False``, :class:`RepoEntry`
        rows instead: no archive is opened and no stored class is imported.
        """
        entries = self._select(_as_selector(selector), _tags(tags))
        if not load_objects:
            return entries
        return [entry.load() for entry in entries]

    def _select(self, selector: Selector, tags: list[str]) -> list[RepoEntry]:
        self._refresh()
        sql, params = _query(selector, tags)
        try:
            rows = self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise ObjectError(f"Cannot query the index of repo '{self._dir}': {exc}.") from None
        entries = []
        parsed: dict[str, Any] = {}  # rows share class maps and tags: parse each text once
        for row in rows:
            encoded = json.loads(row[2])
            classes = parsed.get(row[3])
            if classes is None:
                classes = parsed[row[3]] = json.loads(row[3])
            if selector.match(encoded, classes):
                row_tags = parsed.get(row[4])
                if row_tags is None:
                    row_tags = parsed[row[4]] = tuple(json.loads(row[4]))
                entries.append(self._entry(row, encoded, classes, row_tags))
        return entries

    def _entry(
        self,
        row: Sequence[Any],
        encoded: dict[str, Any],
        classes: dict[str, list[str]],
        tags: tuple[str, ...] | None = None,
    ) -> RepoEntry:
        return RepoEntry(
            dry_id=row[0],
            cls=row[1],
            encoded=encoded,
            tags=tuple(json.loads(row[4])) if tags is None else tags,
            file=self._dir / row[5],
            created=dt.datetime.fromisoformat(row[6]),
            classes=classes,
            _allow=self._allow,
            _trust=self._trust,
            _root=self._dir,
        )

    def entry(self, dry_id: str) -> RepoEntry:
        """The entry of one object, by id or by a unique prefix of at least 4 characters."""
        self._refresh()
        conn = self._conn()
        sql = f"SELECT {_COLUMNS} FROM objects o WHERE o.dry_id = ?"
        rows = conn.execute(sql, (dry_id,)).fetchall()
        if not rows and len(dry_id) >= 4:
            pattern = _like_escape(dry_id) + "%"
            sql = f"SELECT {_COLUMNS} FROM objects o WHERE o.dry_id LIKE ? ESCAPE '\\' LIMIT 11"
            rows = [r for r in conn.execute(sql, (pattern,)) if r[0].startswith(dry_id)]
        if not rows:
            raise ObjectError(
                f"Repo '{self._dir}' has no object with id {dry_id!r}. List the ids with "
                f"'forgeml repo ls {self._dir}'."
            )
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:10])
            raise ObjectError(
                f"Id prefix {dry_id!r} matches several objects in repo '{self._dir}': {ids}. "
                f"Give more characters."
            )
        row = rows[0]
        return self._entry(row, json.loads(row[2]), json.loads(row[3]))

    def __getitem__(self, dry_id: str) -> Any:
        """Load the object with this id."""
        return self.entry(dry_id).load()

    def apply(
        self,
        fn: Callable[[Any], T],
        selector: Selector | type | str | None = None,
        *,
        tags: Iterable[str] | str = (),
    ) -> list[T]:
        """``fn(obj)`` for each selected object, loaded one at a time; the results."""
        return [fn(entry.load()) for entry in self.get(selector, load_objects=False, tags=tags)]

    def __len__(self) -> int:
        self._refresh()
        count: int = self._conn().execute("SELECT COUNT(*) FROM objects").fetchone()[0]
        return count

    def __iter__(self) -> Iterator[Any]:
        """Every object, loaded one at a time as the iteration reaches it."""
        for entry in self.get(load_objects=False):
            yield entry.load()

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Object | RepoEntry):
            dry_id: object = item.dry_id
        else:
            dry_id = item
        if not isinstance(dry_id, str):
            return False
        self._refresh()
        found = self._conn().execute("SELECT 1 FROM objects WHERE dry_id = ?", (dry_id,))
        return found.fetchone() is not None

    def __repr__(self) -> str:
        return f"Repo({str(self._dir)!r})"

    def _inside(self, file: str) -> Path | None:
        """The archive path of an index row, or None if it points outside objects/."""
        path = (self._dir / file).resolve()
        return path if path.is_relative_to((self._dir / OBJECTS).resolve()) else None


def _as_selector(selector: Selector | type | str | None) -> Selector:
    if isinstance(selector, Selector):
        return selector
    if selector is None or isinstance(selector, type | str):
        return Selector(selector)
    raise ObjectError(
        f"Repo.get takes a Selector, a class or a class path. Got "
        f"{type(selector).__name__} {selector!r:.80}."
    )


def _tags(tags: Iterable[str] | str) -> list[str]:
    if isinstance(tags, str):
        return [tags]
    result = list(tags)
    for tag in result:
        if not isinstance(tag, str):
            raise ObjectError(f"Tags must be strings. Got {type(tag).__name__} {tag!r:.80}.")
    return result


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sql_test(path: str, value: Any) -> tuple[str, list[Any]] | None:
    """A SQL test that keeps every row whose value at ``path`` may equal ``value``.

    Only values SQLite reads back exactly: booleans and integers up to 2**53,
    floats within a relative 1e-9 (SQLite parses JSON numbers itself), and
    strings that need no JSON escapes. None for anything else.
    """
    extract = f"json_extract(o.definition, '{path}')"
    if isinstance(value, bool):
        return f"{extract} = ?", [int(value)]
    if isinstance(value, int):
        return (f"{extract} = ?", [value]) if abs(value) < _EXACT_INT else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        margin = abs(value) * 1e-9
        return f"{extract} BETWEEN ? AND ?", [value - margin, value + margin]
    if isinstance(value, str) and json.dumps(value)[1:-1] == value:
        return f"{extract} = ?", [value]
    return None


def _query(selector: Selector, tags: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL that narrows the rows cheaply; the selector's match() has the last word.

    The rows are scanned in insertion order, cheap JSON tests first and the class
    (an indexed lookup per row) last: at 10,000 rows this beats a join through the
    class index, which reads the rows out of order and sorts them.
    """
    where: list[str] = []
    params: list[Any] = []
    tests = [_sql_test(f"$.args[{i}]", pattern) for i, pattern in enumerate(selector._args)]
    for key, pattern in selector._kwargs.items():
        if key == "dry_id" and isinstance(pattern, str):
            where.insert(0, "o.dry_id = ?")
            params.insert(0, pattern)
        elif _KEY.match(key):
            tests.append(_sql_test(f"$.kwargs.{key}", pattern))
    for test in tests:
        if test is not None:
            where.append(test[0])
            params += test[1]
    for tag in tags:
        where.append("EXISTS (SELECT 1 FROM json_each(o.tags) t WHERE t.value = ?)")
        params.append(tag)
    if selector.cls_path is not None:
        where.append(
            "EXISTS (SELECT 1 FROM object_classes c WHERE c.cls = ? AND c.dry_id = o.dry_id)"
        )
        params.append(selector.cls_path)
    elif selector.cls_name is not None:
        where.append(
            "EXISTS (SELECT 1 FROM object_classes c WHERE c.dry_id = o.dry_id"
            " AND (c.cls LIKE ? ESCAPE '\\' OR c.cls LIKE ? ESCAPE '\\'))"
        )
        name = _like_escape(selector.cls_name)
        params += [f"%:{name}", f"%.{name}"]
    sql = f"SELECT {_COLUMNS} FROM objects o"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY o.rowid", params
