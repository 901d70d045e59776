"""Experiment tracking on MLflow: runs, params, batched metrics, artifacts and models.

Runs go to an embedded store by default (``sqlite:///<forgeml home>/mlruns.db``
with artifacts in ``<forgeml home>/mlartifacts``: no server needed), or to any
MLflow tracking server named by ``cfg.tracking.uri`` or ``MLFLOW_TRACKING_URI``.
:func:`experiment` turns an entry function into a tracked run; ``app.run`` does
the same for ``main`` when the config has a ``tracking`` section. When the
server cannot be reached, runs are recorded locally and ``forgeml track sync``
pushes them later. Only rank 0 of a distributed run logs.
"""

from forgeml._core._env import is_rank_zero
from forgeml._core._errors import TrackError
from forgeml.track._api import (
    end_run,
    flush,
    log_artifact,
    log_dict,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    log_text,
    set_tags,
)
from forgeml.track._experiment import experiment
from forgeml.track._model import ModelInfo, load_model, log_model
from forgeml.track._offline import OfflineRecord, sync
from forgeml.track._offline import records as offline_runs
from forgeml.track._query import (
    MetricPoint,
    RunRecord,
    get_metrics,
    get_run,
    list_runs,
    resume_checkpoint,
)
from forgeml.track._run import (
    FLUSH_INTERVAL,
    Run,
    TrackingOptions,
    active_run,
    start_run,
    tracking_enabled,
    tracking_options,
)
from forgeml.track._store import embedded_uri, tracking_uri

__all__ = [
    "FLUSH_INTERVAL",
    "MetricPoint",
    "ModelInfo",
    "OfflineRecord",
    "Run",
    "RunRecord",
    "TrackError",
    "TrackingOptions",
    "active_run",
    "embedded_uri",
    "end_run",
    "experiment",
    "flush",
    "get_metrics",
    "get_run",
    "is_rank_zero",
    "list_runs",
    "load_model",
    "log_artifact",
    "log_dict",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "offline_runs",
    "resume_checkpoint",
    "set_tags",
    "start_run",
    "sync",
    "tracking_enabled",
    "tracking_options",
    "tracking_uri",
]
