"""XGBoost adapter: boosters and scikit-learn API models saved as UBJSON, never pickled.

A ``Booster`` is written with ``save_raw("ubj")``. A scikit-learn API model
(``XGBClassifier``, ``XGBRegressor``, any ``XGBModel``) is written with its own
``save_model`` (UBJSON with the estimator type) plus its constructor
parameters as JSON, so that loading restores the same class with the same
parameters. XGBoost has no global random generator (models take
``random_state``), so this adapter is not ``Seedable``.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
import weakref
from pathlib import Path
from typing import Any

import xgboost

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_path, atomic_write_bytes, atomic_write_text
from forgeml.frameworks._state import state_file

BOOSTER_FORMAT = "xgboost.booster.ubj"
MODEL_FORMAT = "xgboost.sklearn.ubj+json"


class XGBoostAdapter:
    name = "xgboost"
    module = "xgboost"

    def owns(self, obj: object) -> bool:
        """True for ``xgboost.Booster`` and the scikit-learn API models (``xgboost.XGBModel``)."""
        return isinstance(obj, xgboost.Booster | xgboost.XGBModel)

    def save_state(self, obj: Any, directory: Path, stem: str) -> dict[str, Any]:
        """Write ``<stem>.ubj`` (the trees) and, for a scikit-learn API model, ``<stem>.json``.

        An unfitted scikit-learn API model writes only its parameters.
        Parameters that JSON cannot hold (a callable objective, callbacks) are
        listed as ``dropped_params``; loading keeps the values the rebuilt model has.
        """
        directory = Path(directory)
        if isinstance(obj, xgboost.Booster):
            name = f"{stem}.ubj"
            atomic_write_bytes(directory / name, bytes(obj.save_raw(raw_format="ubj")))
            return {
                "format": BOOSTER_FORMAT,
                "files": [name],
                "xgboost_version": xgboost.__version__,
            }
        if not isinstance(obj, xgboost.XGBModel):
            raise ObjectError(
                f"The xgboost adapter saves xgboost.Booster and xgboost.XGBModel objects. "
                f"Got {type(obj).__qualname__}."
            )
        params: dict[str, Any] = {}
        dropped: list[str] = []
        for key, value in obj.get_params(deep=False).items():
            try:
                params[key] = _to_json(value)
            except TypeError:
                dropped.append(key)
        fitted = bool(obj.__sklearn_is_fitted__())
        files = []
        if fitted:
            files.append(f"{stem}.ubj")
            with atomic_path(directory / files[0]) as tmp:
                obj.save_model(tmp)
        files.append(f"{stem}.json")
        cls = _class_path(type(obj))
        document = {
            "format": MODEL_FORMAT,
            "class": cls,
            "params": params,
            "dropped_params": dropped,
            "fitted": fitted,
        }
        atomic_write_text(directory / files[-1], json.dumps(document, indent=1, allow_nan=False))
        return {
            "format": MODEL_FORMAT,
            "files": files,
            "class": cls,
            "fitted": fitted,
            "dropped_params": dropped,
            "xgboost_version": xgboost.__version__,
        }

    def load_state(
        self, obj: Any, directory: Path, info: dict[str, Any], *, trust: bool = False
    ) -> Any:
        """Load what :meth:`save_state` wrote; returns the booster or model.

        ``obj`` is restored in place when it is a ``Booster`` (for a booster) or
        an instance of the saved model class; otherwise a new object is built.
        A saved model class outside the ``xgboost`` package is imported only
        with ``trust=True``.
        """
        directory = Path(directory)
        kind = info.get("format")
        if kind == BOOSTER_FORMAT:
            path = state_file("xgboost", directory, info, ".ubj")
            booster = obj if isinstance(obj, xgboost.Booster) else xgboost.Booster()
            _load_trees(booster, path)
            return booster
        if kind != MODEL_FORMAT:
            raise ObjectError(
                f"The xgboost adapter cannot load state of format {kind!r}. Known formats: "
                f"{BOOSTER_FORMAT}, {MODEL_FORMAT}. Was it saved by another adapter?"
            )
        path = state_file("xgboost", directory, info, ".json")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            cls_path: str = document["class"]
            params = {k: _from_json(v) for k, v in document["params"].items()}
            dropped: list[str] = list(document.get("dropped_params", []))
            fitted = bool(document["fitted"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ObjectError(f"{path} is not a forgeml xgboost model file: {exc!r}.") from exc
        if isinstance(obj, xgboost.XGBModel):
            if _class_path(type(obj)) != cls_path:
                raise ObjectError(
                    f"{path} holds a {cls_path}, but the object to restore is a "
                    f"{_class_path(type(obj))}. Load it into the model it was saved from."
                )
            model = obj
        else:
            model = _import_model_class(cls_path, trust)()
            if dropped:
                warnings.warn(
                    f"forgeml: {cls_path} was saved without the parameters "
                    f"{', '.join(dropped)} (not JSON); the loaded model has their defaults.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        model.set_params(**params)
        if fitted:
            _load_trees(model, state_file("xgboost", directory, info, ".ubj"))
        return model

    # -- forgeml.eval: inference (devices, threads, predict on a batch) ----------------------
    # (numpy batches in and out; forgeml.eval's xgboost agent calls these)

    def inference_info(self) -> dict[str, str]:
        return {"framework": "xgboost", "version": str(xgboost.__version__)}

    def devices(self) -> list[str]:
        """``cpu``, and ``cuda:N`` for each NVIDIA GPU when xgboost was built with CUDA."""
        from forgeml._core._env import nvidia_gpu_count

        if not xgboost.build_info().get("USE_CUDA"):
            return ["cpu"]
        return ["cpu"] + [f"cuda:{i}" for i in range(nvidia_gpu_count())]

    def is_model(self, obj: object) -> bool:
        """True for a ``Booster`` and the scikit-learn API models (``XGBModel``)."""
        return isinstance(obj, xgboost.Booster | xgboost.XGBModel)

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The model with its ``device`` and thread (``n_jobs``/``nthread``) parameters set."""
        if isinstance(model, xgboost.Booster):
            params: dict[str, Any] = {"device": device}
            if threads is not None:
                params["nthread"] = threads
            model.set_param(params)
            return model, threads
        model.set_params(device=device, **({} if threads is None else {"n_jobs": threads}))
        return model, threads

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """Classifiers: ``predict_proba``; other scikit-learn API models: ``predict``. A
        ``Booster`` predicts with ``inplace_predict`` (no DMatrix); a ``binary:logistic``
        one returns two columns, ``[1 - p, p]``."""
        import numpy as np

        if isinstance(model, xgboost.Booster):
            out = np.asarray(model.inplace_predict(batch))
            if out.ndim == 1 and _objective(model) == "binary:logistic":
                return np.stack([1.0 - out, out], axis=1)
            return out
        if isinstance(model, xgboost.XGBClassifier):
            return np.asarray(model.predict_proba(batch))
        return np.asarray(model.predict(batch))

    def synchronize(self, device: str) -> None:
        return None  # predictions are copied back to the host before they return

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.export: ONNX with onnxmltools ------------------------------------------------

    #: The highest ONNX opset onnxmltools' XGBoost converter writes.
    ONNX_MAX_OPSET = 15

    def export_onnx(
        self,
        model: Any,
        sample: Any,
        path: Path,
        *,
        opset: int = ONNX_MAX_OPSET,
        dynamic_batch: bool = True,
        input_name: str = "input",
    ) -> dict[str, Any]:
        """Write an XGBoost model (scikit-learn API or ``Booster``) to ``path`` as ONNX.

        onnxmltools converts the trees to ``ai.onnx.ml`` tree ensembles; classifiers
        output their labels and a probability tensor. Its converter writes opsets up
        to :attr:`ONNX_MAX_OPSET`.
        """
        try:
            import onnxmltools
            from onnxmltools import convert_xgboost
            from onnxmltools.convert.common.data_types import FloatTensorType
        except ImportError as exc:
            raise ObjectError(
                f"Exporting XGBoost models to ONNX needs onnxmltools ({exc}). "
                f"HINT: pip install 'forgeml[onnx]'"
            ) from exc
        if opset > self.ONNX_MAX_OPSET:
            raise ObjectError(
                f"onnxmltools converts XGBoost models to ONNX opsets up to "
                f"{self.ONNX_MAX_OPSET}. Got opset {opset}; give --opset {self.ONNX_MAX_OPSET} "
                f"or lower."
            )
        shape = [None if dynamic_batch else int(sample.shape[0]), *map(int, sample.shape[1:])]
        onnx_model = convert_xgboost(
            model, initial_types=[(input_name, FloatTensorType(shape))], target_opset=opset
        )
        atomic_write_bytes(path, onnx_model.SerializeToString())
        return {"opset": opset, "onnxmltools": str(onnxmltools.__version__)}

    # -- end of forgeml.export --------------------------------------------------------------


def _load_trees(target: Any, path: Path) -> None:
    try:
        target.load_model(bytearray(path.read_bytes()))
    except (OSError, xgboost.core.XGBoostError, TypeError, ValueError) as exc:
        raise ObjectError(f"XGBoost cannot load {path}: {exc}") from exc


_OBJECTIVES: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _objective(booster: Any) -> str | None:
    """The booster's objective name (``"binary:logistic"``, ...), read once per booster."""
    if booster in _OBJECTIVES:
        return _OBJECTIVES[booster]
    try:
        config = json.loads(booster.save_config())
        name: str | None = str(config["learner"]["objective"]["name"])
    except (ValueError, KeyError, TypeError, xgboost.core.XGBoostError):
        name = None
    _OBJECTIVES[booster] = name
    return name


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_model_class(path: str, trust: bool) -> type:
    module_name, _, qualname = path.partition(":")
    if module_name.partition(".")[0] != "xgboost" and not trust:
        raise ObjectError(
            f"The saved model class {path} is not part of xgboost; importing it can run "
            f"its code.\nHINT: if you trust the file, load it with trust=True, or pass a "
            f"freshly built {qualname} to restore in place."
        )
    try:
        found: Any = importlib.import_module(module_name)
        for attr in qualname.split("."):
            found = getattr(found, attr)
    except (ImportError, AttributeError) as exc:
        raise ObjectError(f"Cannot import the saved model class {path}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, xgboost.XGBModel)):
        raise ObjectError(f"The saved model class {path} is not an xgboost.XGBModel.")
    return found


def _to_json(value: Any) -> Any:
    """``value`` as JSON (non-finite floats tagged); TypeError when JSON cannot hold it."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"__float__": repr(float(value))}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return _to_json(value.item())
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if len(value) == 1 and next(iter(value)).startswith("__"):
            raise TypeError("reserved key")
        return {k: _to_json(v) for k, v in value.items()}
    raise TypeError(type(value).__qualname__)


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if list(value) == ["__float__"]:
            return float(value["__float__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


adapter = XGBoostAdapter()
