"""The results database: every evaluation, in an embedded SQLite file.

``$FORGEML_HOME/results.db`` (default ``./.forgeml/results.db``) holds one row
per evaluation: indexed columns to select by (model, framework, agent, task,
dataset, batch size, device, created, forgeml version, git commit), the
headline figures, and the whole result as JSON. The file uses SQLite's WAL
journal, so several evaluations may write at once and readers never block
writers. Its schema version is SQLite's ``user_version``; a file written by a
newer forgeml is refused rather than misread, and an older file is upgraded in
place when it is next written (version 2 added the ``exports`` table: one row
per model export, see :meth:`ResultsDB.add_export`; version 3 the ``trace_file``
column: the trace file of a traced evaluation, see :meth:`ResultsDB.trace_file`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError, did_you_mean
from forgeml.eval._runner import PHASES, EvalResult

SCHEMA_VERSION = 3
DB_NAME = "results.db"
#: The columns one may select and group by.
FILTERS = ("model", "framework", "agent", "task", "dataset", "batch_size", "device")
#: What ``results compare`` lines up: the varying column -> the columns equal in each group
#: (the same model on the same data across frameworks, at one batch size and device; or one
#: model and framework across batch sizes or devices).
COMPARE_BY = {
    "framework": ("model", "dataset", "batch_size", "device"),
    "agent": ("model", "dataset", "batch_size", "device"),
    "batch_size": ("model", "framework", "agent", "dataset", "device"),
    "device": ("model", "framework", "agent", "dataset", "batch_size"),
}
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT,
    framework TEXT NOT NULL,
    agent TEXT NOT NULL,
    task TEXT NOT NULL,
    dataset TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    device TEXT NOT NULL,
    num_samples INTEGER NOT NULL,
    throughput REAL NOT NULL,
    latency_p50_ms REAL,
    forgeml_version TEXT,
    git_commit TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_model ON evaluations (model, framework, batch_size);
CREATE INDEX IF NOT EXISTS evaluations_framework ON evaluations (framework);
CREATE INDEX IF NOT EXISTS evaluations_agent ON evaluations (agent);
CREATE INDEX IF NOT EXISTS evaluations_task ON evaluations (task);
CREATE INDEX IF NOT EXISTS evaluations_dataset ON evaluations (dataset);
CREATE INDEX IF NOT EXISTS evaluations_created ON evaluations (created);
CREATE INDEX IF NOT EXISTS evaluations_version ON evaluations (forgeml_version);
CREATE INDEX IF NOT EXISTS evaluations_commit ON evaluations (git_commit);
"""
#: Version 2: exports (``forgeml export``), the headline figures plus the whole record as JSON.
_EXPORTS = """
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    model TEXT NOT NULL,
    source_framework TEXT NOT NULL,
    target TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    max_abs_diff REAL,
    max_rel_diff REAL,
    source_latency_ms REAL,
    exported_latency_ms REAL,
    forgeml_version TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exports_model ON exports (model, target);
CREATE INDEX IF NOT EXISTS exports_created ON exports (created);
"""
#: Version 3: the trace file of a traced evaluation (``forgeml eval --trace_level``).
_TRACE_FILE = "ALTER TABLE evaluations ADD COLUMN trace_file TEXT;"
#: The statements that bring a database from version ``n - 1`` to ``n``.
_MIGRATIONS = {1: _SCHEMA, 2: _EXPORTS, 3: _TRACE_FILE}
#: The columns exports may be selected by.
EXPORT_FILTERS = ("model", "source_framework", "target")


def results_path() -> Path:
    """``$FORGEML_HOME/results.db`` (default ``./.forgeml/results.db``)."""
    from forgeml._core._env import forgeml_home

    return forgeml_home() / DB_NAME


class ResultsDB:
    """Evaluations stored in SQLite: :meth:`add`, :meth:`get`, :meth:`select`, :meth:`remove`.

    ``path`` defaults to :func:`results_path`. Opening creates nothing; the file
    is created by the first :meth:`add`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser().absolute() if path is not None else results_path()

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise EvalError(f"Cannot open the results database '{self.path}': {exc}.") from None
        try:
            self._check_schema(conn, write=write)
            yield conn
        except sqlite3.DatabaseError as exc:
            raise EvalError(
                f"The results database '{self.path}' cannot be used: {exc}. If the file is "
                f"damaged, move it away; a new one is created on the next evaluation."
            ) from None
        finally:
            conn.close()

    def _check_schema(self, conn: sqlite3.Connection, *, write: bool) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise EvalError(
                f"The results database '{self.path}' has schema version {version}, written by "
                f"a newer forgeml; this one reads version {SCHEMA_VERSION}. Upgrade forgeml, "
                f"or point FORGEML_HOME at another folder."
            )
        if version == SCHEMA_VERSION or not write:
            return
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have upgraded it meanwhile.
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for step in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if current < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _exists(self) -> bool:
        return self.path.is_file()

    def add(self, result: EvalResult) -> str:
        """Store ``result``; returns its id."""
        p50 = result.latency.get("predict")
        row = (
            result.id,
            result.created,
            result.model,
            result.model_version,
            result.framework,
            result.agent,
            result.task,
            result.dataset,
            result.batch_size,
            result.device,
            result.num_samples,
            result.throughput,
            p50.p50 if p50 is not None else None,
            str(result.provenance.get("forgeml_version") or ""),
            result.provenance.get("git_commit"),
            result.to_json(indent=None),
            (result.trace or {}).get("file"),
        )
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT INTO evaluations (id, created, model, model_version, framework, agent, "
                "task, dataset, batch_size, device, num_samples, throughput, latency_p50_ms, "
                "forgeml_version, git_commit, data, trace_file) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return result.id

    def trace_file(self, id_or_prefix: str) -> str | None:
        """The trace file of a traced evaluation (``forgeml trace summary`` reads it), or None."""
        if self._exists():
            with self._connect(write=False) as conn:
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) < 3:
                    return None  # written before traces were recorded
        value: str | None = self._row(id_or_prefix, "trace_file")
        return value

    def select(
        self,
        *,
        limit: int | None = None,
        newest_first: bool = False,
        **filters: Any,
    ) -> list[EvalResult]:
        """Stored results matching every filter (``model="digits_cnn"``, ``batch_size=64``),
        oldest first (or newest first), at most ``limit``."""
        rows = self._select("evaluations", "results", FILTERS, filters, limit, newest_first)
        return [EvalResult.from_json(data) for data in rows]

    def _select(
        self,
        table: str,
        what: str,
        known: Sequence[str],
        filters: Mapping[str, Any],
        limit: int | None,
        newest_first: bool,
        since_version: int = 1,
    ) -> list[str]:
        """The ``data`` column of ``table``'s rows matching every filter (names checked
        against ``known``), in creation order; none from a database older than
        ``since_version`` (the table did not exist then)."""
        unknown = sorted(set(filters) - set(known))
        if unknown:
            raise EvalError(
                f"Cannot select {what} by '{unknown[0]}'. Known: {', '.join(known)}."
                + did_you_mean(unknown[0], known)
            )
        if not self._exists():
            return []
        where = [(f"{name} = ?", value) for name, value in filters.items() if value is not None]
        sql = f"SELECT data FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(clause for clause, _ in where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY created {order}, rowid {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect(write=False) as conn:
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) < since_version:
                return []
            rows = conn.execute(sql, [value for _, value in where]).fetchall()
        return [str(data) for (data,) in rows]

    def get(self, id_or_prefix: str) -> EvalResult:
        """One result by id, or by a unique prefix of at least 4 characters."""
        return EvalResult.from_json(self._row(id_or_prefix, "data"))

    def _row(self, id_or_prefix: str, column: str) -> str:
        key = id_or_prefix.strip().lower()
        if len(key) < 4 or not all(c in "0123456789abcdef" for c in key):
            raise EvalError(
                f"An evaluation id is hexadecimal, given whole or as a prefix of at least 4 "
                f"characters. Got {id_or_prefix!r}. List ids with 'forgeml results ls'."
            )
        rows: list[tuple[str, str]] = []
        if self._exists():
            with self._connect(write=False) as conn:
                rows = conn.execute(
                    f"SELECT id, {column} FROM evaluations WHERE id LIKE ? LIMIT 2",
                    (key + "%",),
                ).fetchall()
        if not rows:
            raise EvalError(
                f"No evaluation with id '{id_or_prefix}' in {self.path}. "
                f"List ids with 'forgeml results ls'."
            )
        if len(rows) > 1:
            raise EvalError(
                f"The id prefix '{id_or_prefix}' matches several evaluations "
                f"({rows[0][0][:12]}, {rows[1][0][:12]}, ...). Give more characters."
            )
        return rows[0][1]

    def remove(self, id_or_prefix: str) -> str:
        """Delete one result; returns its full id."""
        full_id = self._row(id_or_prefix, "id")
        with self._connect(write=True) as conn:
            conn.execute("DELETE FROM evaluations WHERE id = ?", (full_id,))
        return full_id

    def __len__(self) -> int:
        if not self._exists():
            return 0
        with self._connect(write=False) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    # -- exports ------------------------------------------------------------------------------

    def add_export(self, record: Mapping[str, Any]) -> str:
        """Store an export record (``forgeml.export.ExportResult.to_dict()``); returns its id.

        The record needs ``id``, ``created``, ``model``, ``source_framework``, ``target``,
        ``path`` and ``sha256``; ``parity``, ``latency`` and ``provenance`` fill the
        headline columns when present. The whole record is kept as JSON.
        """
        missing = [
            key
            for key in ("id", "created", "model", "source_framework", "target", "path", "sha256")
            if not record.get(key)
        ]
        if missing:
            raise EvalError(
                f"An export record needs {', '.join(missing)}. Got the keys "
                f"{', '.join(sorted(record)) or '(none)'}."
            )
        parity = record.get("parity") or {}
        latency = record.get("latency") or {}
        row = (
            str(record["id"]),
            str(record["created"]),
            str(record["model"]),
            str(record["source_framework"]),
            str(record["target"]),
            str(record["path"]),
            str(record["sha256"]),
            parity.get("max_abs"),
            parity.get("max_rel"),
            latency.get("source_ms"),
            latency.get("exported_ms"),
            str((record.get("provenance") or {}).get("forgeml_version") or ""),
            json.dumps(dict(record)),
        )
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT INTO exports (id, created, model, source_framework, target, path, "
                "sha256, max_abs_diff, max_rel_diff, source_latency_ms, exported_latency_ms, "
                "forgeml_version, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return str(record["id"])

    def exports(
        self, *, limit: int | None = None, newest_first: bool = False, **filters: Any
    ) -> list[dict[str, Any]]:
        """Stored export records matching every filter (``model=``, ``source_framework=``,
        ``target=``), oldest first (or newest first), at most ``limit``."""
        # A database of schema 1 was written before exports were recorded: none.
        rows = self._select(
            "exports", "exports", EXPORT_FILTERS, filters, limit, newest_first, since_version=2
        )
        return [json.loads(data) for data in rows]


# ----------------------------------------------------------------------------- compare


@dataclass
class Comparison:
    """Results lined up in groups, each row with ratios against its group's baseline."""

    by: str
    group_by: tuple[str, ...]
    groups: list[list[dict[str, Any]]]

    def rows(self) -> list[dict[str, Any]]:
        return [row for group in self.groups for row in group]


def main_metric(result: EvalResult) -> tuple[str, float] | None:
    """The headline accuracy figure: top1/accuracy/r2 when present, else the first scalar."""
    scalars = result.scalar_metrics()
    for name in ("top1", "accuracy", "r2", "f1", "mae", "rmse"):
        if name in scalars:
            return name, scalars[name]
    return next(iter(scalars.items()), None)


def compare(
    results: Sequence[EvalResult], *, by: str | None = None, baseline: str | None = None
) -> Comparison:
    """Line ``results`` up by ``by`` (``framework``, ``agent``, ``batch_size``, ``device``;
    default: the first of those that differs) within groups that agree on everything else
    (see :data:`COMPARE_BY`): across frameworks, groups of equal model, dataset, batch
    size and device; across batch sizes, groups of equal model, framework, agent, dataset
    and device. Each row gets ratios against its group's baseline: the first row, or the
    result whose id starts with ``baseline``.

    ``throughput_ratio`` is row ÷ baseline and ``speedup`` is baseline p50 ÷ row p50 of
    the predict latency: above 1 means faster than the baseline. ``main_metric`` (top1,
    accuracy, r2, ...: see :func:`main_metric`), its value and ``main_metric_delta``
    (row - baseline) show whether the accuracy moved.
    """
    if by is None:
        by = next(
            (name for name in COMPARE_BY if len({_value(r, name) for r in results}) > 1),
            "framework",
        )
    if by not in COMPARE_BY:
        raise EvalError(
            f"Results compare by one of {', '.join(COMPARE_BY)}. Got {by!r}."
            + did_you_mean(by, COMPARE_BY)
        )
    group_by = COMPARE_BY[by]
    if baseline is not None and not any(r.id.startswith(baseline.lower()) for r in results):
        raise EvalError(
            f"The baseline '{baseline}' is not among the results compared. Give one of their "
            f"ids (see 'forgeml results ls')."
        )
    grouped: dict[tuple[Any, ...], list[EvalResult]] = {}
    for result in results:
        grouped.setdefault(tuple(_value(result, name) for name in group_by), []).append(result)
    groups = []
    for members in grouped.values():
        if by == "batch_size":
            members = sorted(members, key=lambda r: r.batch_size)
        base = next(
            (r for r in members if baseline is not None and r.id.startswith(baseline.lower())),
            members[0],
        )
        groups.append([_compare_row(r, base) for r in members])
    return Comparison(by=by, group_by=group_by, groups=groups)


def _value(result: EvalResult, name: str) -> Any:
    return getattr(result, name)


def _compare_row(result: EvalResult, base: EvalResult) -> dict[str, Any]:
    row = summary_row(result)
    p50 = result.latency.get("predict")
    base_p50 = base.latency.get("predict")
    row["baseline"] = base.id
    row["throughput_ratio"] = result.throughput / base.throughput if base.throughput else None
    row["speedup"] = (
        base_p50.p50 / p50.p50 if p50 is not None and base_p50 is not None and p50.p50 else None
    )
    metric, base_metric = main_metric(result), main_metric(base)
    row["main_metric"] = metric[0] if metric is not None else None
    row["main_metric_value"] = metric[1] if metric is not None else None
    row["main_metric_delta"] = (
        metric[1] - base_metric[1]
        if metric is not None and base_metric is not None and metric[0] == base_metric[0]
        else None
    )
    return row


# ----------------------------------------------------------------------------- export


def summary_row(result: EvalResult) -> dict[str, Any]:
    """One flat record per result (what ``results ls --json`` and ``export --csv`` write)."""
    row: dict[str, Any] = {
        "id": result.id,
        "created": result.created,
        "model": result.model,
        "model_version": result.model_version,
        "framework": result.framework,
        "agent": result.agent,
        "task": result.task,
        "dataset": result.dataset,
        "batch_size": result.batch_size,
        "device": result.device,
        "num_samples": result.num_samples,
        "num_batches": result.num_batches,
        "throughput": result.throughput,
        "spread": result.spread,
    }
    for phase in PHASES:
        stats = result.latency.get(phase)
        if stats is None:
            continue
        for name in ("min", "mean", "p50", "p90", "p95", "p99", "max"):
            row[f"{phase}_{name}_ms"] = getattr(stats, name)
    for name, value in result.scalar_metrics().items():
        row[f"metric_{name}"] = value
    provenance = result.provenance
    row["cpu"] = (provenance.get("cpu") or {}).get("model")
    row["gpu"] = provenance.get("gpu")
    row["forgeml_version"] = provenance.get("forgeml_version")
    row["git_commit"] = provenance.get("git_commit")
    row["warnings"] = len(result.warnings)
    return row


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of flat records; the header is the union of their keys, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def to_json(rows: Sequence[Any]) -> str:
    return json.dumps(list(rows), indent=2)
