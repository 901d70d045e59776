"""Streaming metrics for evaluation tasks: forgeml.metrics' accumulators, raising EvalError.

The counters live in :mod:`forgeml.metrics` (the one home of framework-neutral
metrics); these subclasses phrase their errors in terms of the model manifest.
"""

from __future__ import annotations

from forgeml._core._errors import EvalError
from forgeml.metrics import ClassificationMetrics as _ClassificationMetrics
from forgeml.metrics import RegressionMetrics as _RegressionMetrics


class ClassificationMetrics(_ClassificationMetrics):
    """Top-1 and top-5 accuracy, per-class precision, recall and F1, and the confusion matrix.

    See :class:`forgeml.metrics.ClassificationMetrics`; errors are :class:`EvalError`.
    """

    error = EvalError
    classes_hint = "The manifest has no output.labels. Add the labels to the manifest."
    labels_hint = "Do the dataset's labels match the manifest's output.labels?"


class RegressionMetrics(_RegressionMetrics):
    """MAE, RMSE and R² (see :class:`forgeml.metrics.RegressionMetrics`), raising EvalError."""

    error = EvalError
