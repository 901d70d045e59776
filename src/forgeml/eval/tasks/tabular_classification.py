"""The ``tabular_classification`` task: feature rows in, class scores out, accuracy metrics.

Datasets: the bundled ``iris``, ``breast_cancer`` and ``wine`` (and ``digits``,
flattened), a ``.csv`` file (a header row; the label column is the last one, or
``label_column``), an ``.npz`` file (``x``, ``y``), a ``forgeml.data.Dataset`` of
``(features, label)`` samples, or an ``(x, y)`` pair of arrays. Metrics: top-1
accuracy (top-5 with 5+ classes), per-class precision, recall and F1, their
macro averages, and the confusion matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import EvalData
from forgeml.eval.tasks._common import class_indices, preprocess_features
from forgeml.eval.tasks._datasets import array_batches, encode_labels
from forgeml.eval.tasks._metrics import ClassificationMetrics
from forgeml.eval.tasks._tabular import read_tabular


class TabularClassification:
    """Classify feature rows: :func:`preprocess_features`, argmax, and
    :class:`ClassificationMetrics`."""

    name = "tabular_classification"
    output_type = "classification"

    def load_dataset(
        self,
        source: Any,
        manifest: Manifest,
        *,
        limit: int | None = None,
        label_column: str | int | None = None,
    ) -> EvalData:
        """``label_column`` (CSV): the label column's name or index; default the manifest's
        ``attributes.label_column``, else the last column."""
        data = read_tabular(
            source, manifest, regression=False, limit=limit, label_column=label_column
        )
        labels = None
        if data.y is not None:
            labels = encode_labels(data.y, data.classes, manifest, data.name)
        return array_batches(
            data.name, data.x, labels, ids=data.ids, limit=limit, problems=data.problems
        )

    def preprocess(self, raw: Any, manifest: Manifest) -> np.ndarray:
        return preprocess_features(raw, manifest.input)

    def postprocess(self, outputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        return class_indices(outputs)

    def metrics(self, manifest: Manifest) -> ClassificationMetrics:
        return ClassificationMetrics(manifest.output.labels, top5=True)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


task = TabularClassification()
