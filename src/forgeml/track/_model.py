"""Models in runs: a forgeml archive stored as an artifact and registered in MLflow's registry."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml._core._errors import TrackError
from forgeml.track import _store
from forgeml.track._run import Run, current
from forgeml.track._store import describe_error

#: The archive's name inside ``models/<name>/`` in a run's artifacts.
ARCHIVE = "model.dry"


@dataclass(frozen=True)
class ModelInfo:
    """Where :func:`log_model` stored a model and the registry version it made."""

    name: str
    run_id: str
    artifact_path: str
    registered_name: str | None
    version: int | None

    @property
    def model_uri(self) -> str:
        """``models:/NAME/VERSION`` when registered, else ``runs:/RUN_ID/models/NAME``."""
        if self.registered_name is not None and self.version is not None:
            return f"models:/{self.registered_name}/{self.version}"
        return f"runs:/{self.run_id}/{self.artifact_path}"


def register(client: Any, name: str, run_id: str, artifact_path: str) -> int:
    """Register ``runs:/run_id/artifact_path`` as a new version of ``name``; returns it."""
    try:
        client.create_registered_model(name)
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id
    )
    return int(version.version)


def log_model(
    obj: Any,
    name: str | None = None,
    *,
    registered_name: str | None = None,
    register_model: bool = True,
    run: Run | None = None,
) -> ModelInfo | None:
    """Save ``obj`` (a :class:`forgeml.Object`) with :func:`forgeml.save_object` into the run's
    artifacts at ``models/<name>/model.dry`` and register it as a new version of
    ``registered_name`` (default: ``name``, itself defaulting to the class name).

    Returns None in a disabled run (rank > 0) or when no run is active.
    """
    from forgeml.objects import Object, save_object

    run = run or current("log_model")
    if run is None or not run.enabled or run.run_id is None:
        return None
    if not isinstance(obj, Object):
        raise TrackError(
            f"track.log_model stores forgeml Objects (save_object archives). Got "
            f"{type(obj).__name__}. Wrap the model in a forgeml.Object, or log a file with "
            f"track.log_artifact."
        )
    name = name or type(obj).__name__
    if not re.fullmatch(r"[\w.-]+", name):
        raise TrackError(
            f"A model name may only contain letters, digits, '_', '-' and '.'. Got {name!r}."
        )
    artifact_path = f"models/{name}"
    with tempfile.TemporaryDirectory(prefix="forgeml-model-") as tmp:
        archive = Path(tmp) / ARCHIVE
        save_object(obj, archive)
        run.log_artifact(archive, artifact_path)
    if not register_model:
        return ModelInfo(name, run.run_id, artifact_path, None, None)
    registered = registered_name or name
    version = run._call(
        f"register model '{registered}'",
        lambda t: register(t.client, registered, t.run_id, artifact_path),
    )
    if run.offline_record is not None:
        run.offline_record.models.append(
            {"registered_name": registered, "artifact_path": artifact_path}
        )
        run.offline_record.save()
    return ModelInfo(name, run.run_id, artifact_path, registered, version)


def load_model(
    model: str,
    version: int | str | None = None,
    *,
    uri: str | None = None,
    allow: Iterable[str] | None = None,
    trust: bool = False,
) -> Any:
    """Load a model stored by :func:`log_model`.

    ``model`` is a registered name (``version`` defaults to the latest),
    ``models:/NAME/VERSION`` or ``runs:/RUN_ID/models/NAME``. ``allow`` and
    ``trust`` are passed to :func:`forgeml.load_object`.
    """
    from forgeml.objects import load_object

    client = _store.client(_store.tracking_uri(uri))
    run_id, path = _resolve(client, model, version)
    with tempfile.TemporaryDirectory(prefix="forgeml-model-") as tmp:
        try:
            local = client.download_artifacts(run_id, f"{path}/{ARCHIVE}", tmp)
        except Exception as exc:
            raise TrackError(
                f"Cannot download model '{model}' (run {run_id}, {path}/{ARCHIVE}): "
                f"{describe_error(exc)}"
            ) from exc
        return load_object(local, allow=allow, trust=trust)


def _resolve(client: Any, model: str, version: int | str | None) -> tuple[str, str]:
    if model.startswith("runs:/"):
        run_id, _, path = model.removeprefix("runs:/").partition("/")
        return run_id, path.strip("/")
    name = model
    if model.startswith("models:/"):
        name, _, text = model.removeprefix("models:/").partition("/")
        version = text or version
    try:
        if version in (None, "", "latest"):
            found = client.search_model_versions(f"name='{name}'")
            if not found:
                raise TrackError(f"No registered model '{name}' (or it has no versions).")
            chosen = max(found, key=lambda v: int(v.version))
        else:
            chosen = client.get_model_version(name, str(version))
    except TrackError:
        raise
    except Exception as exc:
        raise TrackError(
            f"Cannot find model '{name}' version {version or 'latest'}: {describe_error(exc)}"
        ) from exc
    source = str(chosen.source)
    if not source.startswith("runs:/"):
        raise TrackError(
            f"Model '{name}' version {chosen.version} was not logged by forgeml.track "
            f"(its source is {source})."
        )
    run_id, _, path = source.removeprefix("runs:/").partition("/")
    return run_id, path.strip("/")
