"""XGBoost zoo models: gradient-boosted trees for digits and the tabular datasets.

The estimator lives in the ``model`` attribute of an :class:`XGBoostModel`,
built from the constructor arguments; :func:`forgeml.save_object` stores the
trees as UBJSON (never pickle). Trees need no standardisation: the tabular
models take raw features, the digits model the pixels scaled by 1/16 like the
other digits models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xgboost

from forgeml.eval.zoo._builder import SEED, ZooBuilder, digits_inputs, tabular_inputs
from forgeml.objects import Object

#: Parameters every zoo model shares: seeded, one thread, the histogram method.
COMMON = {"random_state": SEED, "n_jobs": 1, "tree_method": "hist"}


class XGBoostModel(Object):
    """An XGBoost scikit-learn API model (``"classifier"`` or ``"regressor"``) and its
    parameters; ``model`` is the estimator."""

    def __init__(self, kind: str, params: Mapping[str, Any] | None = None) -> None:
        classes = {"classifier": xgboost.XGBClassifier, "regressor": xgboost.XGBRegressor}
        self.model = classes[kind](**dict(params or {}))

    def fit(self, x: np.ndarray, y: np.ndarray) -> XGBoostModel:
        self.model.fit(x, y)
        return self


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, C]`` of a classifier, or the values ``[N]`` of a regressor."""
    estimator = getattr(model, "model", model)
    if isinstance(estimator, xgboost.XGBClassifier):
        return np.asarray(estimator.predict_proba(x))
    return np.asarray(estimator.predict(x))


def _trainer(
    kind: str, params: Mapping[str, Any]
) -> Callable[[np.ndarray, np.ndarray], XGBoostModel]:
    def train(x: np.ndarray, y: np.ndarray) -> XGBoostModel:
        return XGBoostModel(kind, {**COMMON, **params}).fit(x, y)

    return train


digits_xgb = ZooBuilder(
    "digits_xgb",
    "xgboost",
    "digits",
    train=_trainer("classifier", {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.3}),
    inputs=digits_inputs("flat"),
    scores=scores,
    description="Gradient-boosted trees on flattened 8x8 digits (XGBoost).",
)
iris_xgb = ZooBuilder(
    "iris_xgb",
    "xgboost",
    "iris",
    train=_trainer("classifier", {"n_estimators": 30, "max_depth": 2, "learning_rate": 0.3}),
    inputs=tabular_inputs("iris", standardize=False),
    scores=scores,
    description="Gradient-boosted trees on raw iris features (XGBoost).",
)
breast_cancer_xgb = ZooBuilder(
    "breast_cancer_xgb",
    "xgboost",
    "breast_cancer",
    train=_trainer("classifier", {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.3}),
    inputs=tabular_inputs("breast_cancer", standardize=False),
    scores=scores,
    description="Gradient-boosted trees on raw breast-cancer features (XGBoost).",
)
diabetes_xgb = ZooBuilder(
    "diabetes_xgb",
    "xgboost",
    "diabetes",
    train=_trainer("regressor", {"n_estimators": 100, "max_depth": 2, "learning_rate": 0.05}),
    inputs=tabular_inputs("diabetes", standardize=False),
    scores=scores,
    description="Gradient-boosted trees (depth 2) on raw diabetes features (XGBoost).",
)
