"""Reading runs back: metrics, run records, listings and checkpoints to resume from."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from forgeml._core._env import forgeml_home
from forgeml._core._errors import TrackError
from forgeml.track import _store
from forgeml.track._run import Run, active_run
from forgeml.track._store import describe_error


class MetricPoint(NamedTuple):
    """One logged value of a metric."""

    step: int
    value: float
    timestamp: int  # milliseconds since the epoch


@dataclass
class RunRecord:
    """A run as the store has it: info, params, tags and the latest value of each metric."""

    run_id: str
    experiment: str
    experiment_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def started(self) -> dt.datetime | None:
        return _time(self.start_time)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to now, while running)."""
        if self.start_time is None:
            return None
        end = self.end_time or (dt.datetime.now(dt.UTC).timestamp() * 1000)
        return max(0.0, (end - self.start_time) / 1000)

    def to_dict(self) -> dict[str, Any]:
        started = self.started
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "start_time": started.isoformat(timespec="seconds") if started else None,
            "end_time": (t.isoformat(timespec="seconds") if (t := _time(self.end_time)) else None),
            "duration_s": None if self.duration is None else round(self.duration, 3),
            "artifact_uri": self.artifact_uri,
            "params": self.params,
            "metrics": self.metrics,
            "tags": self.tags,
        }


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _record(run: Any, experiments: dict[str, str]) -> RunRecord:
    info = run.info
    exp_id = str(info.experiment_id)
    return RunRecord(
        run_id=info.run_id,
        experiment=experiments.get(exp_id, exp_id),
        experiment_id=exp_id,
        name=info.run_name or "",
        status=info.status,
        start_time=info.start_time,
        end_time=info.end_time,
        artifact_uri=str(info.artifact_uri),
        params=dict(sorted(run.data.params.items())),
        metrics=dict(sorted(run.data.metrics.items())),
        tags=dict(sorted(run.data.tags.items())),
    )


def _client_for(run_id: str | None, uri: str | None) -> tuple[Any, str | None]:
    """The client to read ``run_id`` with: the active run's store for the active run."""
    run = active_run()
    mine = run is not None and run.enabled and run_id in (None, run.run_id)
    if run is not None and mine and run._target is not None:
        run.flush()
        return run._target.client, run._target.run_id
    if uri is None and run is not None:
        uri = run.uri  # the store the active run was started with
    return _store.client(_store.tracking_uri(uri)), run_id


def _experiments(client: Any) -> dict[str, str]:
    from mlflow.entities import ViewType

    return {
        str(e.experiment_id): e.name
        for e in client.search_experiments(view_type=ViewType.ALL, max_results=50000)
    }


def find_run(client: Any, run_id: str) -> Any:
    """The run with this id, or the only one whose id starts with it (4+ characters)."""
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if getattr(exc, "error_code", "") not in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        ):
            raise TrackError(f"Cannot read run {run_id}: {describe_error(exc)}") from exc
    if len(run_id) >= 4:
        matches = [r for r in _all_runs(client) if r.info.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise TrackError(
                f"Run id prefix '{run_id}' matches {len(matches)} runs: "
                f"{', '.join(r.info.run_id for r in matches[:5])}. Give more characters."
            )
    where = getattr(client, "tracking_uri", None)
    searched = f" in the tracking store {where}" if where else ""
    raise TrackError(
        f"No run '{run_id}'{searched}. List its runs with 'forgeml runs ls', or point at "
        f"another store (--uri, MLFLOW_TRACKING_URI)."
    )


def _all_runs(
    client: Any,
    experiment_ids: list[str] | None = None,
    *,
    status: str | None = None,
    limit: int = 100_000,
) -> list[Any]:
    if experiment_ids is None:
        experiment_ids = list(_experiments(client))
    if not experiment_ids:
        return []
    runs: list[Any] = []
    token = None
    query = f"attributes.status = '{status}'" if status else ""
    while len(runs) < limit:
        page = client.search_runs(
            experiment_ids,
            filter_string=query,
            max_results=min(1000, limit - len(runs)),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Errors from the store (an unreachable server, say) as one-line TrackErrors."""
    try:
        yield
    except TrackError:
        raise
    except Exception as exc:
        raise TrackError(f"Cannot {what}: {describe_error(exc)}") from exc


def get_run(run_id: str | None = None, *, uri: str | None = None) -> RunRecord:
    """A run's record (the active run without ``run_id``); ``run_id`` may be a unique prefix."""
    client, rid = _client_for(run_id, uri)
    if rid is None:
        raise TrackError("track.get_run needs a run id when no run is active.")
    with _reading(f"read run {rid}"):
        run = find_run(client, rid)
        return _record(run, _experiments(client))


def list_runs(
    experiment: str | None = None,
    *,
    uri: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Runs of one experiment (default: all), newest first; ``status`` such as ``FAILED``."""
    target = _store.tracking_uri(uri)
    if not _store.store_exists(target):
        return []
    with _reading(f"list runs at {target}"):
        return _list_runs(_store.client(target), experiment, status, limit)


def _list_runs(
    client: Any, experiment: str | None, status: str | None, limit: int
) -> list[RunRecord]:
    experiments = _experiments(client)
    if experiment is None:
        ids = list(experiments)
    else:
        ids = [i for i, n in experiments.items() if n == experiment]
        if not ids:
            return []
    if status is not None:
        status = status.upper()
        known = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
        if status not in known:
            raise TrackError(f"Unknown run status '{status}'. Known: {', '.join(known)}.")
    return [_record(r, experiments) for r in _all_runs(client, ids, status=status, limit=limit)]


def get_metrics(
    run_id: str | None = None, *, uri: str | None = None
) -> dict[str, list[MetricPoint]]:
    """Every logged value of every metric of a run (the active run without ``run_id``),
    ordered by step then time. Values still queued by the active run are written first."""
    client, rid = _client_for(run_id, uri)
    if rid is None:
        raise TrackError("track.get_metrics needs a run id when no run is active.")
    history: dict[str, list[MetricPoint]] = {}
    with _reading(f"read the metrics of run {rid}"):
        run = find_run(client, rid)
        for key in sorted(run.data.metrics):
            points = client.get_metric_history(run.info.run_id, key)
            history[key] = sorted(
                (MetricPoint(int(p.step), float(p.value), int(p.timestamp)) for p in points),
                key=lambda p: (p.step, p.timestamp),
            )
    return history


def _download(client: Any, run_id: str, filename: str) -> str | None:
    """``filename`` from the run's artifacts as a local file, or None when it has none."""
    parent = filename.strip("/").rpartition("/")[0]
    try:
        listed = client.list_artifacts(run_id, parent or None)
    except Exception as exc:
        raise TrackError(
            f"Cannot list the artifacts of run {run_id}: {describe_error(exc)}"
        ) from exc
    wanted = filename.strip("/")
    if not any(f.path == wanted and not f.is_dir for f in listed):
        return None
    final = forgeml_home() / "checkpoints" / run_id / wanted
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=final.parent) as tmp:
        try:
            local = client.download_artifacts(run_id, wanted, tmp)
        except Exception as exc:
            raise TrackError(
                f"Cannot download '{wanted}' of run {run_id}: {describe_error(exc)}"
            ) from exc
        os.replace(local, final)  # atomic: other ranks see the old file or the whole new one
    return str(final)


def resume_checkpoint(
    run_id: str | None = None,
    run_id_pretrained: str | None = None,
    filename: str = "last.ckpt",
    *,
    uri: str | None = None,
) -> tuple[str | None, bool]:
    """Find the checkpoint to start from: ``(path, restart)``.

    - ``run_id`` (default: the active run) has ``filename`` among its artifacts:
      its local copy and ``restart=True`` (resume that training where it stopped);
    - else ``run_id_pretrained`` given: that run's ``filename`` and ``restart=False``
      (start a new training from those weights); a missing file is an error;
    - else ``(None, False)``: start from scratch.

    Files are downloaded to ``<forgeml home>/checkpoints/<run id>/``.
    """
    if run_id is None:
        run: Run | None = active_run()
        if run is not None:
            run_id = run.run_id
    if run_id:
        client, rid = _client_for(run_id, uri)
        assert rid is not None
        path = _download(client, rid, filename)
        if path is not None:
            return path, True
    if run_id_pretrained:
        client, rid = _client_for(run_id_pretrained, uri)
        assert rid is not None
        path = _download(client, rid, filename)
        if path is None:
            raise TrackError(
                f"The pretrained run {run_id_pretrained} has no artifact '{filename}'. "
                f"Check the run id and the file name (forgeml runs show {run_id_pretrained})."
            )
        return path, False
    return None, False
