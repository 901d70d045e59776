"""Framework-neutral metrics: the same numbers for numpy, torch and TensorFlow outputs.

:func:`compute` scores arrays, :func:`evaluate` scores a supervised
:class:`forgeml.data.Dataset` batch by batch, and :class:`MetricSet`
accumulates named metrics (``accuracy``, ``top5_accuracy``, ``precision``,
``recall``, ``f1``, ``confusion_matrix``, ``mae``, ``mse``, ``rmse``, ``r2``)
over batches, matching scikit-learn's definitions. Every input is converted to
numpy first, so models of different frameworks are compared on the same
footing. :class:`ClassificationMetrics` and :class:`RegressionMetrics` are the
streaming counters ``forgeml.eval`` reports with.
"""

from forgeml._core._errors import TrainError
from forgeml.metrics._functions import (
    accuracy,
    confusion_matrix,
    f1,
    mae,
    mse,
    precision,
    r2,
    recall,
    rmse,
    top_k_accuracy,
)
from forgeml.metrics._metric_set import (
    CLASSIFICATION_METRICS,
    METRICS,
    REGRESSION_METRICS,
    MetricSet,
    compute,
    evaluate,
    is_classification_metric,
)
from forgeml.metrics._streaming import ClassificationMetrics, RegressionMetrics, per_class_scores

__all__ = [
    "CLASSIFICATION_METRICS",
    "METRICS",
    "REGRESSION_METRICS",
    "ClassificationMetrics",
    "MetricSet",
    "RegressionMetrics",
    "TrainError",
    "accuracy",
    "compute",
    "confusion_matrix",
    "evaluate",
    "f1",
    "is_classification_metric",
    "mae",
    "mse",
    "per_class_scores",
    "precision",
    "r2",
    "recall",
    "rmse",
    "top_k_accuracy",
]
