"""Hyperparameter search with Optuna over config keys and ``ObjectDef`` parameters.

A search is a forgeml config naming an entry function (``entry: module:function``)
plus a space that maps dotted config keys (``model.params.hidden``) to
distributions. :func:`optimize` runs trials in parallel workers against one
study storage (a journal file by default, never SQLite), resumes after an
interruption, records each trial as a tracking run under the study's run, and
prunes from values reported with :func:`report` or ``track.log_metrics``.
Optuna is imported only when a search runs.
"""

from forgeml._core._errors import TuneError
from forgeml.tune._plot import PLOTS, plot
from forgeml.tune._report import (
    Pruned,
    TrialInfo,
    callback,
    current_trial,
    report,
    should_prune,
)
from forgeml.tune._space import TYPES, Param, SearchSpace, apply_values, object_def
from forgeml.tune._study import (
    DIRECTIONS,
    PRUNERS,
    SAMPLERS,
    StudyStatus,
    best_config,
    best_definition,
    default_storage,
    load_study,
    optimize,
    retrain,
    run_worker,
    save_best,
    status,
)

__all__ = [
    "DIRECTIONS",
    "PLOTS",
    "PRUNERS",
    "SAMPLERS",
    "TYPES",
    "Param",
    "Pruned",
    "SearchSpace",
    "StudyStatus",
    "TrialInfo",
    "TuneError",
    "apply_values",
    "best_config",
    "best_definition",
    "callback",
    "current_trial",
    "default_storage",
    "load_study",
    "object_def",
    "optimize",
    "plot",
    "report",
    "retrain",
    "run_worker",
    "save_best",
    "should_prune",
    "status",
]
