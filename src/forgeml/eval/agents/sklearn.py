"""The ``sklearn`` agent: a scikit-learn estimator or pipeline from a forgeml archive.

Classifiers predict with ``predict_proba`` (``decision_function`` when they have
none), regressors with ``predict``. CPU only; ``threads`` sets the estimator's
``n_jobs`` and limits the BLAS/OpenMP pools.
"""

from __future__ import annotations

from forgeml.eval.agents._base import FrameworkAgent


class SklearnAgent(FrameworkAgent):
    name = "sklearn"
    framework = "sklearn"
    adapter_name = "sklearn"
    packages = ("sklearn", "skops")
    runs = "a scikit-learn estimator (sklearn.base.BaseEstimator with predict)"


agent = SklearnAgent()
