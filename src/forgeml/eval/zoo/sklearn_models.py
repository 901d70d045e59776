"""scikit-learn zoo models: logistic regression and a random forest for digits, and
tabular classifiers and a regressor with the standardisation inside a pipeline.

The estimator lives in the ``model`` attribute of a :class:`SklearnModel`, built
from the constructor arguments; :func:`forgeml.save_object` stores the fitted
estimator with skops (never pickle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from forgeml.eval.zoo._builder import SEED, ZooBuilder, digits_inputs, tabular_inputs
from forgeml.objects import Object


class SklearnModel(Object):
    """A scikit-learn estimator built from its class and parameters.

    With ``standardize=True`` the estimator follows a ``StandardScaler`` in a
    pipeline, so the model takes raw features. ``model`` is the estimator.
    """

    def __init__(
        self,
        estimator: type,
        params: Mapping[str, Any] | None = None,
        *,
        standardize: bool = False,
    ) -> None:
        model = estimator(**dict(params or {}))
        self.model = make_pipeline(StandardScaler(), model) if standardize else model

    def fit(self, x: np.ndarray, y: np.ndarray) -> SklearnModel:
        self.model.fit(x, y)
        return self


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, C]`` of a classifier, or the values ``[N]`` of a regressor."""
    estimator = getattr(model, "model", model)
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(x))
    return np.asarray(estimator.predict(x))


def _trainer(
    estimator: type, params: Mapping[str, Any], *, standardize: bool = False
) -> Callable[[np.ndarray, np.ndarray], SklearnModel]:
    def train(x: np.ndarray, y: np.ndarray) -> SklearnModel:
        return SklearnModel(estimator, dict(params), standardize=standardize).fit(x, y)

    return train


digits_logreg = ZooBuilder(
    "digits_logreg",
    "sklearn",
    "digits",
    train=_trainer(LogisticRegression, {"max_iter": 1000}),
    inputs=digits_inputs("flat"),
    scores=scores,
    description="Logistic regression on flattened 8x8 digits (scikit-learn).",
)
digits_forest = ZooBuilder(
    "digits_forest",
    "sklearn",
    "digits",
    train=_trainer(RandomForestClassifier, {"n_estimators": 50, "random_state": SEED, "n_jobs": 1}),
    inputs=digits_inputs("flat"),
    scores=scores,
    description="A random forest (50 trees) on flattened 8x8 digits (scikit-learn).",
)
iris_sklearn = ZooBuilder(
    "iris_sklearn",
    "sklearn",
    "iris",
    train=_trainer(LogisticRegression, {"max_iter": 1000}, standardize=True),
    inputs=tabular_inputs("iris", standardize=False),
    scores=scores,
    description="Standard scaler + logistic regression on iris features (scikit-learn).",
)
breast_cancer_sklearn = ZooBuilder(
    "breast_cancer_sklearn",
    "sklearn",
    "breast_cancer",
    train=_trainer(LogisticRegression, {"max_iter": 1000}, standardize=True),
    inputs=tabular_inputs("breast_cancer", standardize=False),
    scores=scores,
    description="Standard scaler + logistic regression on breast-cancer features (scikit-learn).",
)
diabetes_sklearn = ZooBuilder(
    "diabetes_sklearn",
    "sklearn",
    "diabetes",
    train=_trainer(Ridge, {"alpha": 1.0}, standardize=True),
    inputs=tabular_inputs("diabetes", standardize=False),
    scores=scores,
    description="Standard scaler + ridge regression on diabetes features (scikit-learn).",
)
