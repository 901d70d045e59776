"""The ``tabular_regression`` task: feature rows in, values out, MAE, RMSE and R².

Datasets: the bundled ``diabetes``, a ``.csv`` file (a header row; the target
column is the last one, or ``label_column``), an ``.npz`` file (``x``, ``y``),
a ``forgeml.data.Dataset`` of ``(features, target)`` samples, or an ``(x, y)``
pair of arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import EvalData
from forgeml.eval.tasks._common import preprocess_features, regression_values
from forgeml.eval.tasks._datasets import array_batches
from forgeml.eval.tasks._metrics import RegressionMetrics
from forgeml.eval.tasks._tabular import read_tabular


class TabularRegression:
    """Predict values from feature rows: :func:`preprocess_features`, :class:`RegressionMetrics`."""

    name = "tabular_regression"
    output_type = "regression"

    def load_dataset(
        self,
        source: Any,
        manifest: Manifest,
        *,
        limit: int | None = None,
        label_column: str | int | None = None,
    ) -> EvalData:
        """``label_column`` (CSV): the target column's name or index; default the manifest's
        ``attributes.label_column``, else the last column."""
        data = read_tabular(
            source, manifest, regression=True, limit=limit, label_column=label_column
        )
        targets = None if data.y is None else np.asarray(data.y, dtype=np.float64)
        return array_batches(
            data.name, data.x, targets, ids=data.ids, limit=limit, problems=data.problems
        )

    def preprocess(self, raw: Any, manifest: Manifest) -> np.ndarray:
        return preprocess_features(raw, manifest.input)

    def postprocess(self, outputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        return regression_values(outputs)

    def metrics(self, manifest: Manifest) -> RegressionMetrics:
        return RegressionMetrics()

    def __repr__(self) -> str:
        return f"<task {self.name}>"


task = TabularRegression()
