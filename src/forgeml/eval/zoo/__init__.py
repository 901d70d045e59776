"""The built-in model zoo: small models trained on scikit-learn's bundled datasets.

Each name maps to a :class:`ZooBuilder` in a per-framework module, loaded (with
its framework) only when that model is built or described. Models are trained
the first time a manifest needs them (``weights: {zoo: NAME}``), with fixed
seeds, and cached (see :func:`forgeml.eval.resolve_weights`). Third parties add
builders through the entry-point group ``forgeml.zoo``.

=====================  ==========  ============  =========================================
name                   framework   dataset       model
=====================  ==========  ============  =========================================
digits_cnn             pytorch     digits        CNN, NCHW [1, 8, 8] (also ONNX)
digits_mlp             pytorch     digits        MLP, flat [64] (also ONNX)
digits_keras_cnn       tensorflow  digits        Keras CNN, NHWC [8, 8, 1]
digits_logreg          sklearn     digits        logistic regression, flat [64]
digits_forest          sklearn     digits        random forest, flat [64]
digits_xgb             xgboost     digits        gradient-boosted trees, flat [64]
<data>_torch           pytorch     <data>        MLP on standardised features (also ONNX)
<data>_keras           tensorflow  <data>        Keras MLP on standardised features
<data>_sklearn         sklearn     <data>        scaler + logistic regression / ridge
<data>_xgb             xgboost     <data>        gradient-boosted trees on raw features
=====================  ==========  ============  =========================================

``<data>`` is ``iris``, ``breast_cancer`` (classification) or ``diabetes`` (regression).
"""

from __future__ import annotations

from forgeml._core._errors import EvalError
from forgeml._core._registry import Registry
from forgeml.eval.zoo._builder import (
    SEED,
    ZooBuilder,
    digits_inputs,
    score_outputs,
    standardization,
    tabular_inputs,
)

ZOO = Registry("zoo")

_MODULES = {
    "pytorch": ("forgeml.eval.zoo.torch_models", "pip install 'forgeml[torch]'"),
    "tensorflow": ("forgeml.eval.zoo.keras_models", "pip install 'forgeml[tensorflow]'"),
    "sklearn": ("forgeml.eval.zoo.sklearn_models", "pip install 'forgeml[sklearn]'"),
    "xgboost": ("forgeml.eval.zoo.xgboost_models", "pip install 'forgeml[xgboost]'"),
}
#: builder name -> manifest framework of its archive
BUILTIN: dict[str, str] = {
    "digits_cnn": "pytorch",
    "digits_mlp": "pytorch",
    "digits_keras_cnn": "tensorflow",
    "digits_logreg": "sklearn",
    "digits_forest": "sklearn",
    "digits_xgb": "xgboost",
}
for _data in ("iris", "breast_cancer", "diabetes"):
    BUILTIN[f"{_data}_torch"] = "pytorch"
    BUILTIN[f"{_data}_keras"] = "tensorflow"
    BUILTIN[f"{_data}_sklearn"] = "sklearn"
    BUILTIN[f"{_data}_xgb"] = "xgboost"
for _name, _framework in BUILTIN.items():
    _module, _hint = _MODULES[_framework]
    ZOO.register(_name, f"{_module}:{_name}", hint=_hint)


def get_builder(name: str) -> ZooBuilder:
    """The builder registered as ``name`` (imports its framework)."""
    builder = ZOO.load(name)
    if not isinstance(builder, ZooBuilder):
        target = ZOO.entry(name).target
        raise EvalError(
            f"The zoo entry '{name}' ({target}) is {type(builder).__name__}, not a ZooBuilder."
        )
    return builder


__all__ = [
    "BUILTIN",
    "SEED",
    "ZOO",
    "ZooBuilder",
    "digits_inputs",
    "get_builder",
    "score_outputs",
    "standardization",
    "tabular_inputs",
]
