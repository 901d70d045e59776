"""Metrics by name, computed the same way on numpy, torch and TensorFlow data.

:class:`MetricSet` streams: ``update(targets, outputs)`` batch by batch keeps a
confusion matrix (classification) or running sums (regression), so a whole
dataset never has to be in memory and the numbers are those of the whole set
at once. :func:`compute` scores arrays; :func:`evaluate` scores a
:class:`forgeml.data.Dataset`. Every array is converted to numpy first, so a
model from any framework is scored by the same code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from forgeml._core._errors import TrainError, did_you_mean
from forgeml.metrics._streaming import RegressionMetrics, per_class_scores

#: The metric names :class:`MetricSet` knows. ``precision``, ``recall`` and ``f1`` are
#: macro averages; add ``_micro`` or ``_weighted`` for those averages
#: (``f1_weighted``). ``top5_accuracy`` takes any k (``top3_accuracy``).
METRICS = (
    "accuracy",
    "confusion_matrix",
    "f1",
    "mae",
    "mse",
    "precision",
    "r2",
    "recall",
    "rmse",
    "top5_accuracy",
)
#: Metrics of class predictions; the others score values (regression).
CLASSIFICATION_METRICS = ("accuracy", "confusion_matrix", "f1", "precision", "recall")
REGRESSION_METRICS = ("mae", "mse", "r2", "rmse")
_AVERAGES = ("macro", "micro", "weighted")
_TOP_K = re.compile(r"^top(\d+)_accuracy$")
_AVERAGED = re.compile(r"^(precision|recall|f1)(?:_(macro|micro|weighted))?$")


def _check_names(metrics: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = tuple(metrics)
    if not names:
        raise TrainError("No metric to compute: pass at least one name, e.g. ('accuracy',).")
    for name in names:
        if not isinstance(name, str):
            raise TrainError(f"Metric names are strings. Got {name!r} ({type(name).__name__}).")
        if name in METRICS or _TOP_K.match(name) or _AVERAGED.match(name):
            if (match := _TOP_K.match(name)) and int(match.group(1)) < 1:
                raise TrainError(f"Top-k accuracy needs k >= 1. Got '{name}'.")
            continue
        raise TrainError(
            f"Unknown metric '{name}'. Known: {', '.join(METRICS)} (precision, recall and f1 "
            f"also as NAME_micro / NAME_weighted; top5_accuracy with any k)."
            + did_you_mean(name, METRICS)
        )
    return names


def is_classification_metric(name: str) -> bool:
    """True for metrics of class predictions (accuracy, top-k, precision, confusion matrix...)."""
    return bool(name in CLASSIFICATION_METRICS or _TOP_K.match(name) or _AVERAGED.match(name))


def to_numpy(value: Any) -> np.ndarray:
    """An array or tensor of any framework (or a list) as a numpy array, values kept."""
    from forgeml.data._backend import convert_leaf

    return np.asarray(convert_leaf(value, "numpy"))


class MetricSet:
    """Named metrics, accumulated batch by batch.

    >>> m = MetricSet(["accuracy", "f1"])
    >>> m.update([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])  # class scores
    >>> m.update([0], [0])  # or class indices
    >>> {k: round(v, 3) for k, v in m.result().items()}
    {'accuracy': 0.75, 'f1': 0.733}

    Classification metrics take ``outputs`` as class indices (one per
    sample) or as scores, one column per class (the predicted class is the
    arg-max; top-k accuracy needs scores). A binary model's single score per
    sample (floats that are not all whole numbers >= 0, targets 0/1) is
    thresholded: at 0.5 when the batch's values lie in [0, 1] (probabilities),
    else at 0 (logits), class 1 above it. Regression metrics take one value
    per sample. Targets and outputs may be numpy arrays, torch or TensorFlow
    tensors, or lists. ``num_classes`` fixes the number of classes (the macro
    averages then count every class, as ``labels=range(num_classes)`` does in
    scikit-learn); otherwise the classes are those seen in the targets or
    predictions, as scikit-learn does.
    """

    def __init__(self, metrics: Iterable[str] | str, *, num_classes: int | None = None) -> None:
        self.metrics = _check_names(metrics)
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
            raise TrainError(f"num_classes must be a positive integer. Got {num_classes!r}.")
        self.num_classes = num_classes
        self._ks = sorted({int(m.group(1)) for name in self.metrics if (m := _TOP_K.match(name))})
        self._classification = any(is_classification_metric(n) for n in self.metrics)
        self._regression = any(n in REGRESSION_METRICS for n in self.metrics)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        size = self.num_classes or 0
        self._confusion = np.zeros((size, size), dtype=np.int64)
        self._top_hits = dict.fromkeys(self._ks, 0)
        self._count = 0
        self._values = RegressionMetrics()

    # -- accumulating --------------------------------------------------------------------------

    def update(self, targets: Any, outputs: Any) -> None:
        """Add one batch: the true ``targets`` and the model's ``outputs`` for them."""
        truth = to_numpy(targets)
        out = to_numpy(outputs)
        samples = truth.shape[0] if truth.ndim else 1
        if out.ndim == 0 or out.shape[0] != samples:
            raise TrainError(
                f"A batch has {samples} targets but outputs of shape {out.shape}: the model "
                f"must give one output (a value, a class or a row of class scores) per sample."
            )
        if self._classification:
            self._update_classes(truth.reshape(-1) if truth.ndim <= 1 else truth, out)
        if self._regression:
            self._values.update(_values(out, samples), out, truth.reshape(samples, -1)[:, 0])
        self._count += samples

    def _update_classes(self, truth: np.ndarray, out: np.ndarray) -> None:
        if truth.ndim != 1:
            raise TrainError(
                f"Classification metrics need one class index per sample; the targets have "
                f"shape {truth.shape}. Pass class indices, not one-hot rows (argmax them)."
            )
        labels = _indices(truth, "target")
        scores = out if out.ndim == 2 and out.shape[1] > 1 else None
        if scores is not None:
            predicted = scores.argmax(axis=1)
        else:
            binary = _binary_predictions(out, labels)
            predicted = binary if binary is not None else _indices(out, "output")
        if labels.size == 0:
            return
        needed = int(max(labels.max(), predicted.max())) + 1
        if scores is not None:
            needed = max(needed, scores.shape[1])
        if self.num_classes is not None and needed > self.num_classes:
            raise TrainError(
                f"A class index {needed - 1} is outside the {self.num_classes} classes "
                f"(num_classes={self.num_classes}). Do the targets and outputs match it?"
            )
        if needed > self._confusion.shape[0]:
            grown = np.zeros((needed, needed), dtype=np.int64)
            size = self._confusion.shape[0]
            grown[:size, :size] = self._confusion
            self._confusion = grown
        size = self._confusion.shape[0]
        self._confusion += np.bincount(labels * size + predicted, minlength=size * size).reshape(
            size, size
        )
        for k in self._ks:
            if scores is None:
                raise TrainError(
                    f"top{k}_accuracy needs class scores (one column per class); the outputs "
                    f"are class indices of shape {out.shape}. Pass the model's scores."
                )
            if k >= scores.shape[1]:
                self._top_hits[k] += labels.size
                continue
            top = np.argpartition(scores, -k, axis=1)[:, -k:]
            self._top_hits[k] += int((top == labels[:, None]).any(axis=1).sum())

    # -- results -------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """Every metric by name: floats, and a list of lists for ``confusion_matrix``."""
        if not self._count:
            raise TrainError("No samples were scored: the dataset or batches were empty.")
        out: dict[str, Any] = {}
        values = self._values.result() if self._regression else {}
        for name in self.metrics:
            if name in REGRESSION_METRICS:
                out[name] = values["rmse"] ** 2 if name == "mse" else values[name]
            elif name == "accuracy":
                total = self._confusion.sum()
                out[name] = float(np.trace(self._confusion) / total)
            elif name == "confusion_matrix":
                out[name] = self._confusion.tolist()
            elif match := _TOP_K.match(name):
                out[name] = self._top_hits[int(match.group(1))] / int(self._confusion.sum())
            elif match := _AVERAGED.match(name):
                out[name] = self._averaged(match.group(1), match.group(2) or "macro")
        return out

    def _averaged(self, kind: str, average: str) -> float:
        confusion = self._confusion
        if average == "micro":  # single-label classes: micro P = R = F1 = accuracy
            return float(np.trace(confusion) / confusion.sum())
        precision, recall, f1, support = per_class_scores(confusion)
        scores = {"precision": precision, "recall": recall, "f1": f1}[kind]
        if average == "weighted":
            return float(np.average(scores, weights=support)) if support.sum() else 0.0
        if self.num_classes is None:  # as scikit-learn: the labels seen in targets or outputs
            seen = (support > 0) | (confusion.sum(axis=0) > 0)
            scores = scores[seen]
        return float(scores.mean())


def _binary_predictions(out: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Classes 0/1 from one score per sample of a binary model, or None for class indices.

    Float outputs with one column that cannot be class indices (a fraction or a
    negative value) are a binary model's scores: probabilities when the batch's
    values lie in [0, 1] (class 1 above 0.5), else logits (class 1 above 0), as
    torchmetrics reads them. The targets must then be 0/1.
    """
    flat = out.reshape(out.shape[0], -1)
    if flat.shape[1] != 1 or flat.dtype.kind != "f" or flat.size == 0:
        return None
    values = flat[:, 0]
    if not np.all(np.isfinite(values)):
        raise TrainError(
            f"The outputs hold a non-finite value ({float(values[~np.isfinite(values)][0])!r}); "
            f"classification metrics cannot score it. Check the model for NaN or inf."
        )
    fractional = np.mod(values, 1) != 0
    if not fractional.any() and values.min() >= 0:
        return None  # whole non-negative numbers: class indices
    if labels.size and labels.max() > 1:
        example = float(values[fractional][0] if fractional.any() else values.min())
        raise TrainError(
            f"Classification metrics need class indices, but the outputs hold values that "
            f"are not (e.g. {example!r}). One score per sample is read as a binary model's "
            f"output only for 0/1 targets, and the targets hold class {int(labels.max())}. "
            f"Pass class scores with one column per class, or use a regression metric "
            f"(mae, rmse, r2)."
        )
    threshold = 0.5 if values.min() >= 0 and values.max() <= 1 else 0.0
    return (values > threshold).astype(np.int64)


def _indices(values: np.ndarray, what: str) -> np.ndarray:
    flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values
    if flat.ndim == 2 and flat.shape[1] == 1:
        flat = flat[:, 0]
    if flat.ndim != 1:
        raise TrainError(
            f"Cannot read class indices from {what}s of shape {values.shape}: give one index "
            f"per sample, or (for outputs) one score per class."
        )
    if flat.dtype.kind == "b":
        flat = flat.astype(np.int64)
    if flat.dtype.kind == "f":
        if flat.size and not np.all(np.equal(np.mod(flat, 1), 0)):
            raise TrainError(
                f"Classification metrics need class indices, but the {what}s hold fractional "
                f"values (e.g. {flat[np.mod(flat, 1) != 0][0]!r}). Pass class scores with one "
                f"column per class, or use a regression metric (mae, rmse, r2)."
            )
    elif flat.dtype.kind not in "iu":
        raise TrainError(f"Class {what}s must be numbers. Got dtype {flat.dtype}.")
    indices = flat.astype(np.int64)
    if indices.size and indices.min() < 0:
        raise TrainError(
            f"Class {what}s are indices 0..classes-1. Got {int(indices.min())}. Encode the "
            f"labels as indices first."
        )
    return indices


def _values(out: np.ndarray, samples: int) -> np.ndarray:
    flat = out.reshape(samples, -1)
    if flat.shape[1] != 1:
        raise TrainError(
            f"Regression metrics need one value per sample; the outputs have shape "
            f"{out.shape}. Select the output column to score."
        )
    return flat[:, 0]


def compute(
    targets: Any,
    outputs: Any,
    metrics: Iterable[str] | str = ("accuracy",),
    *,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """The named metrics of ``outputs`` against ``targets`` (arrays or tensors of any framework).

    >>> compute([0, 1, 2, 2], [0, 1, 1, 2], ["accuracy", "recall"])
    {'accuracy': 0.75, 'recall': 0.8333333333333334}
    """
    metric_set = MetricSet(metrics, num_classes=num_classes)
    metric_set.update(targets, outputs)
    return metric_set.result()


def evaluate(
    dataset: Any,
    metrics: Iterable[str] | str = ("accuracy",),
    *,
    predict: Callable[[Any], Any] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """The named metrics over a supervised :class:`forgeml.data.Dataset`, batch by batch.

    With ``predict``, the elements are ``(x, y)`` pairs and the outputs are
    ``predict(x)`` (batches are passed whole; unbatched samples one at a time).
    Without it, the elements are ``(outputs, y)`` pairs: predictions already
    made. The dataset may hold numpy arrays, torch or TensorFlow tensors.
    """
    from forgeml.data import Dataset

    if not isinstance(dataset, Dataset):
        raise TrainError(
            f"evaluate() takes a forgeml.data.Dataset. Got {type(dataset).__name__}. Wrap "
            f"arrays with NumpyDataset((x, y), supervised=True), or use compute(targets, outputs)."
        )
    if not dataset.supervised:
        raise TrainError(
            "evaluate() needs a supervised dataset, whose elements are (x, y) pairs. Build it "
            "with supervised=True."
        )
    metric_set = MetricSet(metrics, num_classes=num_classes)
    batched = dataset.batched
    for x, y in dataset:
        if not batched:
            x = _add_batch_axis(x)
            y = _add_batch_axis(y)
        outputs = predict(x) if predict is not None else x
        metric_set.update(y, outputs)
    return metric_set.result()


def _add_batch_axis(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _add_batch_axis(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_add_batch_axis(item) for item in value)
    return to_numpy(value)[None, ...]
