"""Streaming metrics: a few counters or sums, whatever the number of batches.

:class:`ClassificationMetrics` keeps a confusion matrix (and top-5 hits);
:class:`RegressionMetrics` keeps sums of errors and of the targets. Fed batch
by batch, they give the same numbers as computed on the whole set at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from forgeml._core._errors import ForgeMLError, TrainError


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_class_scores(
    confusion: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support of a confusion matrix (rows: true class).

    A ratio whose denominator is 0 is 0, as scikit-learn's ``zero_division=0``.
    """
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


class ClassificationMetrics:
    """Top-1 and top-5 accuracy, per-class precision, recall and F1, and the confusion matrix.

    ``labels`` names the classes (default: their indices). The number of
    classes is ``len(labels)``, or ``num_classes``, or the width of the first
    outputs. Top-5 accuracy is reported when there are 5 or more classes and the
    outputs are scores (one column per class). Macro averages are over all the
    classes, those absent from the data included (their scores count as 0).
    """

    #: the error raised for inputs that cannot be scored (forgeml.eval's subclass: EvalError)
    error: ClassVar[type[ForgeMLError]] = TrainError
    #: how to name the classes when they cannot be told from the outputs
    classes_hint: ClassVar[str] = "Pass labels= or num_classes=."
    #: what to check when an index is outside the classes
    labels_hint: ClassVar[str] = "Do the targets match labels= or num_classes=?"

    def __init__(
        self,
        labels: Sequence[str] | None = None,
        *,
        num_classes: int | None = None,
        top5: bool = True,
    ) -> None:
        self.labels = tuple(str(label) for label in labels) if labels else None
        self.num_classes = len(self.labels) if self.labels else num_classes
        self.want_top5 = top5
        self.confusion: np.ndarray | None = None
        self.top5_hits = 0
        self.top5_seen = 0

    def _start(self, outputs: np.ndarray) -> np.ndarray:
        classes = self.num_classes
        if classes is None:
            if outputs.ndim != 2:
                raise self.error(
                    f"Cannot tell the number of classes: the model outputs one value per "
                    f"sample. {self.classes_hint}"
                )
            classes = int(outputs.shape[1])
        self.num_classes = classes
        self.confusion = np.zeros((classes, classes), dtype=np.int64)
        return self.confusion

    def update(self, predictions: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> None:
        """Count one batch: predicted class indices, the model's outputs, the true indices."""
        predicted = np.asarray(predictions).astype(np.int64, copy=False).ravel()
        truth = np.asarray(labels).astype(np.int64, copy=False).ravel()
        outputs = np.asarray(outputs)
        confusion = self.confusion if self.confusion is not None else self._start(outputs)
        classes = confusion.shape[0]
        if truth.shape != predicted.shape:
            raise self.error(
                f"A batch has {truth.size} labels but {predicted.size} predictions. The model "
                f"must output one prediction per sample."
            )
        if truth.size == 0:
            return
        for name, values in (("label", truth), ("prediction", predicted)):
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= classes:
                raise self.error(
                    f"A {name} index {high if high >= classes else low} is outside the "
                    f"{classes} classes of the model (0..{classes - 1}). {self.labels_hint}"
                )
        confusion += np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(
            classes, classes
        )
        if self.want_top5 and classes >= 5 and outputs.ndim == 2 and outputs.shape[1] >= 5:
            top = np.argpartition(outputs, -5, axis=1)[:, -5:]
            self.top5_hits += int((top == truth[:, None]).any(axis=1).sum())
            self.top5_seen += truth.size

    def result(self) -> dict[str, Any]:
        """``top1``, ``top5`` (5+ classes), ``macro_precision``/``macro_recall``/``macro_f1``,
        ``per_class`` (a list of ``{label, precision, recall, f1, support}``),
        ``confusion_matrix`` (rows: true class, columns: predicted) and ``labels``."""
        if self.confusion is None or not self.confusion.any():
            return {}
        confusion = self.confusion
        classes = confusion.shape[0]
        names = list(self.labels) if self.labels else [str(i) for i in range(classes)]
        hits = np.diag(confusion).astype(np.float64)
        precision, recall, f1, support = per_class_scores(confusion)
        result: dict[str, Any] = {"top1": float(hits.sum() / confusion.sum())}
        if self.top5_seen:
            result["top5"] = self.top5_hits / self.top5_seen
        result.update(
            macro_precision=float(precision.mean()),
            macro_recall=float(recall.mean()),
            macro_f1=float(f1.mean()),
            per_class=[
                {
                    "label": names[i],
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i in range(classes)
            ],
            confusion_matrix=confusion.tolist(),
            labels=names,
        )
        return result


class RegressionMetrics:
    """MAE, RMSE and R², from running sums (targets shifted by the first one, for precision)."""

    #: the error raised for inputs that cannot be scored (forgeml.eval's subclass: EvalError)
    error: ClassVar[type[ForgeMLError]] = TrainError

    def __init__(self) -> None:
        self.count = 0
        self.shift: float | None = None
        self.sum_y = 0.0  # of y - shift
        self.sum_y2 = 0.0  # of (y - shift)²
        self.sum_abs = 0.0  # of |y - prediction|
        self.sum_sq = 0.0  # of (y - prediction)²

    def update(self, predictions: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> None:
        predicted = np.asarray(predictions, dtype=np.float64).ravel()
        truth = np.asarray(labels, dtype=np.float64).ravel()
        if truth.shape != predicted.shape:
            raise self.error(
                f"A batch has {truth.size} targets but {predicted.size} predictions. The model "
                f"must output one value per sample."
            )
        if truth.size == 0:
            return
        if self.shift is None:
            self.shift = float(truth[0])
        centred = truth - self.shift
        residual = truth - predicted
        self.count += truth.size
        self.sum_y += float(centred.sum())
        self.sum_y2 += float(np.dot(centred, centred))
        self.sum_abs += float(np.abs(residual).sum())
        self.sum_sq += float(np.dot(residual, residual))

    def result(self) -> dict[str, Any]:
        """``mae``, ``rmse`` and ``r2`` (as scikit-learn: 1.0 for a perfect fit of constant
        targets, 0.0 for an imperfect one)."""
        if not self.count:
            return {}
        total = max(self.sum_y2 - self.sum_y**2 / self.count, 0.0)
        perfect = 1.0 if self.sum_sq == 0 else 0.0  # constant targets (as scikit-learn)
        r2 = 1.0 - self.sum_sq / total if total > 0 else perfect
        return {
            "mae": self.sum_abs / self.count,
            "rmse": math.sqrt(self.sum_sq / self.count),
            "r2": r2,
        }
