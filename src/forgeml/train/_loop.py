"""What every framework's procedure shares: data as arrays, seeding, monitoring, callbacks.

The framework modules (``forgeml/frameworks/_train_*.py``) run the epochs;
:class:`Progress` records each epoch's metrics, follows the monitored one,
decides early stopping and calls the callbacks (turning :class:`StopTraining`
into a clean stop).
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from forgeml._core._errors import TrainError
from forgeml.train._callbacks import Callback, StopTraining
from forgeml.train._result import TrainResult

log = logging.getLogger("forgeml.train")

#: framework (its state adapter's name) -> the module that trains its models
BACKENDS = {
    "torch": "forgeml.frameworks._train_torch",
    "keras": "forgeml.frameworks._train_keras",
    "sklearn": "forgeml.frameworks._train_sklearn",
    "xgboost": "forgeml.frameworks._train_sklearn",
}
_LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error")


def framework_model(component: Any) -> tuple[Any, str]:
    """The framework model of a model component and its framework's name.

    The component is itself a framework model (``class Net(Object, torch.nn.Module)``)
    or holds one in ``.model`` (:class:`Estimator`, ``KerasMLP``).
    """
    from forgeml.frameworks import state_adapter_for

    for candidate in (component, getattr(component, "model", None)):
        if candidate is None:
            continue
        adapter = state_adapter_for(candidate)
        if adapter is not None and adapter.name in BACKENDS:
            return candidate, adapter.name
    raise TrainError(
        f"The model component {type(component).__qualname__} is not a model forgeml can train: "
        f"it must be a torch module or Keras model that is also an Object (class Net(Object, "
        f"torch.nn.Module)), or an Object holding a torch, Keras, scikit-learn or XGBoost model "
        f"in its .model attribute (e.g. forgeml.train.Estimator)."
    )


def backend(framework: str) -> ModuleType:
    """The module that trains ``framework``'s models."""
    return importlib.import_module(BACKENDS[framework])


def seed_everything(seed: int, framework: str) -> None:
    """Seed Python, numpy and the framework (torch, Keras...) with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TrainError(f"fit()'s seed must be an integer or None. Got {seed!r}.")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    backend(framework).seed(int(seed))


def arrays(dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``(x, y)`` of a supervised dataset (any backend) as two numpy arrays."""
    from forgeml.data import Dataset

    if isinstance(dataset, tuple) and len(dataset) == 2:
        x, y = dataset
        return _array(x, what, "x"), _array(y, what, "y")
    if not isinstance(dataset, Dataset):
        raise TrainError(
            f"The {what} data must be a forgeml.data Dataset of (x, y) pairs (or an (x, y) tuple "
            f"of arrays). Got {type(dataset).__name__}. Wrap arrays with "
            f"NumpyDataset((x, y), supervised=True)."
        )
    if not dataset.supervised:
        raise TrainError(
            f"The {what} dataset must be supervised: its elements (x, y) pairs. Build it with "
            f"supervised=True."
        )
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for x, y in dataset.numpy():
        xs.append(_array(x, what, "x"))
        ys.append(_array(y, what, "y"))
    if not xs:
        raise TrainError(f"The {what} dataset is empty.")
    if dataset.batched:
        return np.concatenate(xs), np.concatenate(ys)
    return np.stack(xs), np.stack(ys)


def _array(value: Any, what: str, side: str) -> np.ndarray:
    from forgeml.metrics._metric_set import to_numpy

    if isinstance(value, dict | list | tuple):
        raise TrainError(
            f"The {what} data's {side} is a {type(value).__name__}; forgeml.train takes one "
            f"array for x and one for y. Combine them with dataset.map(...) first."
        )
    return to_numpy(value)


def default_metrics(y: np.ndarray) -> tuple[str, ...]:
    """``accuracy`` for class indices, ``mae`` for values."""
    return ("accuracy",) if y.dtype.kind in "iub" else ("mae",)


def better_mode(monitor: str) -> str:
    """``min`` for losses and errors, ``max`` for the rest (accuracy, F1, R²)."""
    name = monitor.removeprefix("val_")
    return "min" if any(name.endswith(part) for part in _LOWER_IS_BETTER) else "max"


@dataclass
class Progress:
    """The history, the monitored metric, early stopping and the callbacks of one ``fit``."""

    procedure: Any
    callbacks: Sequence[Callback]
    metrics: tuple[str, ...]
    has_val: bool
    has_loss: bool
    framework: str
    monitor: str | None = None
    mode: str = "min"
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    wait: int = 0
    improved: bool = False
    should_stop: bool = False
    stopped: bool = False
    stop_reason: str | None = None
    early_stopped: bool = False
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        monitor = self.procedure.monitor
        if monitor is None:
            prefix = "val_" if self.has_val else ""
            if self.has_loss:
                monitor = f"{prefix}loss"
            elif self.metrics:
                monitor = f"{prefix}{self.metrics[0]}"
        self.monitor = monitor
        mode = self.procedure.mode
        self.mode = better_mode(monitor or "loss") if mode == "auto" else mode

    def score(self, prefix: str, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        """``{prefix + name: value}`` of the metrics (numbers only)."""
        from forgeml.metrics import compute

        values = compute(targets, outputs, self.metrics)
        return {f"{prefix}{k}": float(v) for k, v in values.items() if not isinstance(v, list)}

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record an epoch; sets ``improved`` and ``should_stop`` for the loop to act on."""
        row = {"epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        self.improved = False
        if self.monitor is not None:
            if self.monitor not in metrics:
                raise TrainError(
                    f"The monitored metric '{self.monitor}' is not among this epoch's metrics: "
                    f"{', '.join(metrics) or '(none)'}. Set monitor= on the procedure to one of "
                    f"them."
                )
            value = float(metrics[self.monitor])
            if self._better(value):
                self.best_value, self.best_epoch, self.wait = value, epoch, 0
                self.improved = True
            else:
                self.wait += 1
        for callback in self.callbacks:
            try:
                callback.on_epoch_end(epoch, dict(metrics))
            except StopTraining as exc:
                self.stopped, self.should_stop = True, True
                self.stop_reason = str(exc) or type(exc).__name__
                log.info("training stopped at epoch %d by a callback: %s", epoch, self.stop_reason)
                return
        patience = self.procedure.patience
        if patience is not None and self.wait >= patience:
            self.early_stopped, self.should_stop = True, True

    def _better(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        if self.best_value is None:
            return True
        delta = float(self.procedure.min_delta)
        if self.mode == "min":
            return value < self.best_value - delta
        return value > self.best_value + delta

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume."""
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "wait": self.wait,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state.get("history", [])]
        self.best_epoch = state.get("best_epoch")
        self.best_value = state.get("best_value")
        self.wait = int(state.get("wait", 0))

    def result(self) -> TrainResult:
        return TrainResult(
            history=self.history,
            monitor=self.monitor,
            mode=self.mode,
            best_epoch=self.best_epoch,
            best_value=self.best_value,
            stopped=self.stopped,
            stop_reason=self.stop_reason,
            early_stopped=self.early_stopped,
            framework=self.framework,
            seconds=time.perf_counter() - self.started,
        )


@dataclass
class FitJob:
    """Everything a framework module needs to train: the model, components and data."""

    net: Any
    optimizer: Any
    loss: Any
    procedure: Any
    x: np.ndarray
    y: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None
    progress: Progress
    seed: int | None


def check_callbacks(callbacks: Iterable[Any], where: str) -> list[Any]:
    out = []
    for callback in callbacks:
        if not callable(getattr(callback, "on_epoch_end", None)):
            raise TrainError(
                f"{where}: a callback needs an on_epoch_end(epoch, metrics) method (subclass "
                f"forgeml.train.Callback). Got {callback!r}."
            )
        out.append(callback)
    return out
