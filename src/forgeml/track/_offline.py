"""Offline runs: recorded in a local store while the tracking server is unreachable, then synced.

The local store is SQLite at ``<forgeml home>/offline/mlruns.db`` with artifacts
in ``offline/mlartifacts``. Each offline run has a record
``offline/records/<local run id>.json`` naming the server it was meant for, the
server's run id when the run started there before the server went away, what
has been synced, and where to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._env import forgeml_home
from forgeml._core._errors import TrackError
from forgeml._core._files import atomic_write_text
from forgeml.track import _store
from forgeml.track._store import Target, describe_error
from forgeml.track._values import METRICS_PER_BATCH, PARAMS_PER_BATCH, chunks

#: Sync steps, in order; a record lists those done so an interrupted sync resumes.
STEPS = ("params", "tags", "metrics", "artifacts", "models", "status")


def offline_dir() -> Path:
    return forgeml_home() / "offline"


def offline_uri() -> str:
    return f"sqlite:///{offline_dir() / 'mlruns.db'}"


@dataclass
class OfflineRecord:
    """What ``forgeml track sync`` needs to push one offline run to its server."""

    local_run_id: str
    target_uri: str
    experiment: str
    reason: str
    created: float
    host: str
    pid: int
    #: The run on the server: there before the switch to offline, or made by a sync.
    remote_run_id: str | None = None
    #: The server that holds ``remote_run_id`` (a sync to another URI makes a new run).
    remote_uri: str | None = None
    ended: bool = False
    models: list[dict[str, str]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    synced_uri: str | None = None
    synced_at: float | None = None

    @property
    def path(self) -> Path:
        return offline_dir() / "records" / f"{self.local_run_id}.json"

    @property
    def synced(self) -> bool:
        return self.synced_at is not None

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> OfflineRecord:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "synced": self.synced}


def records() -> list[OfflineRecord]:
    """Every offline run recorded under this forgeml home, oldest first."""
    folder = offline_dir() / "records"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.json"):
        try:
            found.append(OfflineRecord.load(path))
        except (OSError, ValueError, TypeError):
            continue  # a record being written right now, or damaged: skipped
    return sorted(found, key=lambda r: r.created)


def open_offline(
    *,
    target_uri: str,
    experiment: str,
    run_name: str | None,
    start_time: int,
    remote_run_id: str | None,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    reason: str,
) -> tuple[Target, OfflineRecord]:
    """Create the local run standing in for a run at ``target_uri``; say so once."""
    from mlflow.entities import Param, RunTag

    from forgeml.track._run import warn_offline

    uri = offline_uri()
    client = _store.client(uri)
    exp_id = _store.experiment_id(client, uri, experiment)
    created = client.create_run(exp_id, start_time=start_time, run_name=run_name)
    local_id = created.info.run_id
    for batch in chunks(params.items(), PARAMS_PER_BATCH):
        client.log_batch(local_id, params=[Param(k, v) for k, v in batch])
    offline_tags = {**tags, "forgeml.offline.target": target_uri}
    for tag_batch in chunks(offline_tags.items(), PARAMS_PER_BATCH):
        client.log_batch(local_id, tags=[RunTag(k, v) for k, v in tag_batch])
    record = OfflineRecord(
        local_run_id=local_id,
        target_uri=target_uri,
        experiment=experiment,
        reason=reason,
        created=time.time(),
        host=socket.gethostname(),
        pid=os.getpid(),
        remote_run_id=remote_run_id,
        remote_uri=target_uri if remote_run_id else None,
    )
    record.save()
    warn_offline(target_uri, reason, str(offline_dir()))
    return Target(client, uri, local_id), record


def _running_elsewhere(record: OfflineRecord) -> bool:
    """True while the process recording this run is still alive (sync would race it)."""
    if record.ended or record.host != socket.gethostname():
        return False
    import psutil

    return bool(psutil.pid_exists(record.pid)) and record.pid != os.getpid()


def sync(uri: str | None = None, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Push every offline run not yet synced to its server (or to ``uri``).

    Params, tags, metrics (with their steps and timestamps), artifacts, registered
    models and the final status are replayed; the record is then marked synced, so
    running it again does nothing. A run whose process is still recording is
    skipped, and a run whose server cannot be reached stays queued.

    Returns one dict per run: ``local_run_id``, ``experiment``, ``uri``, ``run_id``
    (on the server), ``state`` (``synced``; ``pending`` with ``dry_run``;
    ``running``; ``failed``, with the reason in ``error``).
    """
    results = []
    for record in records():
        if record.synced:
            continue
        target_uri = _store.normalize_uri(uri) if uri else record.target_uri
        result: dict[str, Any] = {
            "local_run_id": record.local_run_id,
            "experiment": record.experiment,
            "uri": target_uri,
            "run_id": record.remote_run_id if record.remote_uri == target_uri else None,
        }
        if _running_elsewhere(record):
            result["state"] = "running"
        elif dry_run:
            result["state"] = "pending"
        else:
            try:
                result["run_id"] = _sync_one(record, target_uri)
                result["state"] = "synced"
            except TrackError as exc:
                result["state"] = "failed"
                result["error"] = str(exc)
        results.append(result)
    return results


def _sync_one(record: OfflineRecord, uri: str) -> str:
    from mlflow.entities import Metric, Param, RunTag

    reason = _store.probe(uri)
    if reason is not None:
        raise TrackError(
            f"The tracking server {uri} cannot be reached ({reason}). The run stays queued "
            f"in {offline_dir()}; run 'forgeml track sync' again later."
        )
    local = _store.client(offline_uri())
    remote = _store.client(uri)
    try:
        run = local.get_run(record.local_run_id)
        remote_id = _remote_run(record, uri, remote, run)
        if "params" not in record.done:
            existing = remote.get_run(remote_id).data.params
            params = [Param(k, v) for k, v in run.data.params.items() if existing.get(k) != v]
            for batch in chunks(params, PARAMS_PER_BATCH):
                remote.log_batch(remote_id, params=batch)
            _done(record, "params")
        if "tags" not in record.done:
            tags = {
                k: v
                for k, v in run.data.tags.items()
                if k not in ("mlflow.runName", "forgeml.offline.target")
            }
            tags["forgeml.offline.run_id"] = record.local_run_id
            tags["forgeml.offline.reason"] = record.reason[:1000]
            for tag_batch in chunks(tags.items(), PARAMS_PER_BATCH):
                remote.log_batch(remote_id, tags=[RunTag(k, v) for k, v in tag_batch])
            _done(record, "tags")
        if "metrics" not in record.done:
            for key in sorted(run.data.metrics):
                history = local.get_metric_history(record.local_run_id, key)
                metrics = [Metric(key, m.value, m.timestamp, m.step) for m in history]
                for metric_batch in chunks(metrics, METRICS_PER_BATCH):
                    remote.log_batch(remote_id, metrics=metric_batch)
            _done(record, "metrics")
        if "artifacts" not in record.done:
            folder = Path(str(run.info.artifact_uri).removeprefix("file://"))
            if folder.is_dir() and any(folder.iterdir()):
                remote.log_artifacts(remote_id, str(folder))
            _done(record, "artifacts")
        if "models" not in record.done:
            from forgeml.track._model import register

            for model in record.models:
                register(remote, model["registered_name"], remote_id, model["artifact_path"])
            _done(record, "models")
        if "status" not in record.done:
            status = run.info.status
            if status == "RUNNING":  # its process died without ending it
                status = "KILLED"
            remote.set_terminated(remote_id, status, end_time=run.info.end_time or None)
            _done(record, "status")
    except TrackError:
        raise
    except Exception as exc:
        raise TrackError(
            f"Syncing offline run {record.local_run_id} to {uri} failed: {describe_error(exc)}. "
            f"What was pushed stays pushed; run 'forgeml track sync' again to finish."
        ) from exc
    record.synced_uri = uri
    record.synced_at = time.time()
    record.save()
    with contextlib.suppress(Exception):  # the record already says it is synced
        local.set_tag(record.local_run_id, "forgeml.offline.synced_to", f"{uri} {remote_id}")
    return remote_id


def _remote_run(record: OfflineRecord, uri: str, remote: Any, run: Any) -> str:
    """The server's run for this record: the one it started as, or a new one."""
    if record.remote_run_id and record.remote_uri == uri:
        try:
            remote.get_run(record.remote_run_id)
            return record.remote_run_id
        except Exception as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
    exp_id = _store.experiment_id(remote, uri, record.experiment)
    created = remote.create_run(exp_id, start_time=run.info.start_time, run_name=run.info.run_name)
    record.remote_run_id = created.info.run_id
    record.remote_uri = uri
    record.done = []
    record.save()
    return str(created.info.run_id)


def _done(record: OfflineRecord, step: str) -> None:
    record.done.append(step)
    record.save()
