"""One function per metric, on arrays or tensors of any framework (see :class:`MetricSet`)."""

from __future__ import annotations

from typing import Any

from forgeml._core._errors import TrainError
from forgeml.metrics._metric_set import compute


def _average(average: str) -> str:
    if average not in ("macro", "micro", "weighted"):
        raise TrainError(f"average must be 'macro', 'micro' or 'weighted'. Got {average!r}.")
    return "" if average == "macro" else f"_{average}"


def accuracy(targets: Any, outputs: Any) -> float:
    """The fraction of samples whose predicted class is right.

    ``outputs`` are class indices, class scores (their arg-max), or a binary
    model's one score per sample (class 1 above 0.5 for probabilities in
    [0, 1], above 0 for logits; see :class:`MetricSet`).
    """
    return float(compute(targets, outputs, "accuracy")["accuracy"])


def top_k_accuracy(targets: Any, scores: Any, k: int = 5) -> float:
    """The fraction of samples whose class is among the ``k`` highest ``scores``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TrainError(f"top_k_accuracy's k must be a positive integer. Got {k!r}.")
    name = f"top{k}_accuracy"
    return float(compute(targets, scores, name)[name])


def precision(
    targets: Any, outputs: Any, *, average: str = "macro", num_classes: int | None = None
) -> float:
    """Precision averaged over the classes (``macro``, ``micro`` or ``weighted`` by support)."""
    name = f"precision{_average(average)}"
    return float(compute(targets, outputs, name, num_classes=num_classes)[name])


def recall(
    targets: Any, outputs: Any, *, average: str = "macro", num_classes: int | None = None
) -> float:
    """Recall averaged over the classes (``macro``, ``micro`` or ``weighted`` by support)."""
    name = f"recall{_average(average)}"
    return float(compute(targets, outputs, name, num_classes=num_classes)[name])


def f1(
    targets: Any, outputs: Any, *, average: str = "macro", num_classes: int | None = None
) -> float:
    """F1 averaged over the classes (``macro``, ``micro`` or ``weighted`` by support)."""
    name = f"f1{_average(average)}"
    return float(compute(targets, outputs, name, num_classes=num_classes)[name])


def confusion_matrix(targets: Any, outputs: Any, *, num_classes: int | None = None) -> Any:
    """Counts of (true class, predicted class) as a numpy array: rows true, columns predicted."""
    import numpy as np

    matrix = compute(targets, outputs, "confusion_matrix", num_classes=num_classes)
    return np.asarray(matrix["confusion_matrix"], dtype=np.int64)


def mae(targets: Any, outputs: Any) -> float:
    """The mean absolute error."""
    return float(compute(targets, outputs, "mae")["mae"])


def mse(targets: Any, outputs: Any) -> float:
    """The mean squared error."""
    return float(compute(targets, outputs, "mse")["mse"])


def rmse(targets: Any, outputs: Any) -> float:
    """The root mean squared error."""
    return float(compute(targets, outputs, "rmse")["rmse"])


def r2(targets: Any, outputs: Any) -> float:
    """The coefficient of determination (1 is perfect; as scikit-learn for constant targets)."""
    return float(compute(targets, outputs, "r2")["r2"])
