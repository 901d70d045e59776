"""The ``xgboost`` agent: an XGBoost model (scikit-learn API, or a ``Booster``) from an archive.

A classifier predicts with ``predict_proba``, a regressor with ``predict``, a
``Booster`` with ``inplace_predict``. ``threads`` sets ``n_jobs``/``nthread``;
``cuda:N`` needs an xgboost built with CUDA.
"""

from __future__ import annotations

from forgeml.eval.agents._base import FrameworkAgent


class XGBoostAgent(FrameworkAgent):
    name = "xgboost"
    framework = "xgboost"
    adapter_name = "xgboost"
    packages = ("xgboost",)
    runs = "an xgboost.XGBModel (XGBClassifier, XGBRegressor, ...) or xgboost.Booster"


agent = XGBoostAgent()
