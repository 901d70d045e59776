"""Training from components: every part a definition that ``forgeml.tune`` can search.

A :class:`Trainable` is built from a model, an :class:`Optimizer`, a
:class:`Loss`, a procedure (:class:`EpochLoop` for torch, :class:`Fit` for
scikit-learn, XGBoost and Keras) and callbacks, each an
:class:`~forgeml.objects.ObjectDef`. ``fit(train, val, seed=)`` returns a
:class:`TrainResult`; ``evaluate`` scores with :mod:`forgeml.metrics`;
``save_object``/``load_object`` keep the trained weights. :class:`Pipe` chains
models across frameworks. Callbacks get each epoch's metrics:
:class:`ReportCallback` forwards them to a function (which may raise
:class:`StopTraining` to prune), :class:`TrackCallback` logs them to
:mod:`forgeml.track`.

Built-in models, loaded with their framework when first used:
``MLP`` and ``CNN`` (torch, for 8x8 digits and other small inputs) and
``KerasMLP``; scikit-learn and XGBoost models are :class:`Estimator` s.
Importing this package imports no ML framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forgeml._core._errors import TrainError
from forgeml.train._callbacks import Callback, ReportCallback, StopTraining, TrackCallback
from forgeml.train._components import EpochLoop, Estimator, Fit, Loss, Optimizer
from forgeml.train._loop import BACKENDS
from forgeml.train._pipe import Pipe
from forgeml.train._result import TrainResult
from forgeml.train._trainable import Trainable

if TYPE_CHECKING:
    from forgeml.frameworks._train_keras import KerasMLP
    from forgeml.frameworks._train_torch import CNN, MLP

__all__ = [
    "BACKENDS",
    "CNN",
    "MLP",
    "Callback",
    "EpochLoop",
    "Estimator",
    "Fit",
    "KerasMLP",
    "Loss",
    "Optimizer",
    "Pipe",
    "ReportCallback",
    "StopTraining",
    "TrackCallback",
    "TrainError",
    "TrainResult",
    "Trainable",
]

_LAZY = {
    "CNN": "forgeml.frameworks._train_torch",
    "MLP": "forgeml.frameworks._train_torch",
    "KerasMLP": "forgeml.frameworks._train_keras",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forgeml.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
