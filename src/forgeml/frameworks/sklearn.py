"""scikit-learn adapter: estimators (pipelines included) saved with skops, never pickled.

Loading admits the types skops trusts by default plus the classes of a small
allowlist of packages (:data:`SAFE_PACKAGES`); anything else (a user's
function in a ``FunctionTransformer``, a third-party estimator) needs
``trust=True``. scikit-learn has no random generator of its own besides
numpy's, which the launcher already seeds, so this adapter is not ``Seedable``.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sklearn
import sklearn.base
import skops
import skops.io

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_write_bytes
from forgeml.frameworks._state import check_format, state_file

#: Packages whose *classes* a skops file may hold without ``trust=True``.
#: Functions never qualify, not even numpy's: a ``FunctionTransformer`` calls
#: its function on the data, so only a trusted file may name one that skops
#: does not trust itself (it trusts numpy's ufuncs such as ``numpy.log1p``).
SAFE_PACKAGES = ("numpy", "scipy", "sklearn")

FORMAT = "sklearn.skops"


class SklearnAdapter:
    name = "sklearn"
    module = "sklearn"

    def owns(self, obj: object) -> bool:
        """True for scikit-learn estimators (``sklearn.base.BaseEstimator``), pipelines included."""
        return isinstance(obj, sklearn.base.BaseEstimator)

    def save_state(self, obj: Any, directory: Path, stem: str) -> dict[str, Any]:
        """Write ``obj`` (fitted or not) to ``<stem>.skops``."""
        try:
            data = skops.io.dumps(obj, compression=zipfile.ZIP_DEFLATED)
        except Exception as exc:  # skops raises TypeError and others for what it cannot save
            raise ObjectError(
                f"skops cannot save the {type(obj).__qualname__} estimator: {exc}\n"
                f"HINT: lambdas and locally defined functions cannot be saved; use a "
                f"function defined at the top level of a module."
            ) from exc
        name = f"{stem}.skops"
        atomic_write_bytes(Path(directory) / name, data)
        return {
            "format": FORMAT,
            "files": [name],
            "class": _class_path(type(obj)),
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
        }

    def load_state(
        self, obj: Any, directory: Path, info: dict[str, Any], *, trust: bool = False
    ) -> Any:
        """Load the estimator saved by :meth:`save_state`; returns it (a new object).

        Types that neither skops trusts by default nor are classes of
        :data:`SAFE_PACKAGES` are refused with :class:`ObjectError` unless ``trust``.
        When ``obj`` is given, the loaded estimator must be of its class.
        """
        check_format("sklearn", info, FORMAT)
        path = state_file("sklearn", Path(directory), info, ".skops")
        try:
            data = path.read_bytes()  # read once: the checked bytes are the loaded bytes
            untrusted = skops.io.get_untrusted_types(data=data)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ObjectError(f"Cannot read the skops file {path}: {exc}") from exc
        refused = [] if trust else [t for t in untrusted if not _is_safe_class(t)]
        if refused:
            raise ObjectError(
                f"{path} holds types that forgeml does not load without trust: "
                f"{', '.join(refused)}. Only the types skops trusts and classes from "
                f"{', '.join(SAFE_PACKAGES)} load by default; loading other types can run "
                f"their code.\nHINT: if you trust this file, load it with trust=True."
            )
        try:
            estimator = skops.io.loads(data, trusted=untrusted)
        except Exception as exc:
            raise ObjectError(f"skops cannot load {path}: {exc}") from exc
        if obj is not None and type(estimator) is not type(obj):
            raise ObjectError(
                f"{path} holds a {_class_path(type(estimator))}, but the object to restore "
                f"is a {_class_path(type(obj))}. Load it into the estimator it was saved from."
            )
        return estimator

    # -- forgeml.eval: inference (devices, threads, predict on a batch) ----------------------
    # (numpy batches in and out; forgeml.eval's sklearn agent calls these)

    def inference_info(self) -> dict[str, str]:
        return {"framework": "sklearn", "version": str(sklearn.__version__)}

    def devices(self) -> list[str]:
        return ["cpu"]

    def is_model(self, obj: object) -> bool:
        """True for fitted-or-not estimators that predict (pipelines included)."""
        return isinstance(obj, sklearn.base.BaseEstimator) and hasattr(obj, "predict")

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The estimator itself (CPU only). ``threads`` sets every ``n_jobs`` parameter of
        the estimator (nested ones included) and limits the BLAS/OpenMP thread pools
        process-wide (threadpoolctl; :meth:`thread_state` undoes it)."""
        if threads is None:
            return model, None
        import threadpoolctl

        threadpoolctl.threadpool_limits(limits=threads)
        jobs = [k for k in model.get_params(deep=True) if k.split("__")[-1] == "n_jobs"]
        if jobs:
            model.set_params(**dict.fromkeys(jobs, threads))
        return model, threads

    def thread_state(self) -> Callable[[], None]:
        """A function that sets the BLAS/OpenMP thread pools back to their sizes now."""
        import threadpoolctl

        restore: Callable[[], None] = threadpoolctl.threadpool_limits(
            limits=None
        ).restore_original_limits
        return restore

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """Classifiers: ``predict_proba`` (columns in ``classes_`` order), else
        ``decision_function`` (a binary one as two columns, ``[-d, d]``), else one-hot
        ``predict``. Other estimators: ``predict``."""
        import numpy as np

        if not sklearn.base.is_classifier(model):
            return np.asarray(model.predict(batch))
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(batch))
        if hasattr(model, "decision_function"):
            scores = np.asarray(model.decision_function(batch))
            return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores
        labels = np.asarray(model.predict(batch))
        return (labels[:, None] == np.asarray(model.classes_)[None, :]).astype(np.float32)

    def synchronize(self, device: str) -> None:
        return None

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.export: ONNX with skl2onnx --------------------------------------------------

    def export_onnx(
        self,
        model: Any,
        sample: Any,
        path: Path,
        *,
        opset: int = 17,
        dynamic_batch: bool = True,
        input_name: str = "input",
    ) -> dict[str, Any]:
        """Write the estimator (pipelines included) to ``path`` as ONNX with skl2onnx.

        The input is a float32 tensor shaped like ``sample`` (the batch axis named
        when ``dynamic_batch``). Classifiers output their labels and a probability
        tensor (no ``ZipMap``), which is what forgeml's ONNX Runtime agent reads.
        """
        try:
            from skl2onnx import __version__ as skl2onnx_version
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import FloatTensorType
        except ImportError as exc:
            raise ObjectError(
                f"Exporting scikit-learn models to ONNX needs skl2onnx ({exc}). "
                f"HINT: pip install 'forgeml[onnx]'"
            ) from exc
        shape = [None if dynamic_batch else int(sample.shape[0]), *map(int, sample.shape[1:])]
        classifiers = [m for m in _estimators(model) if sklearn.base.is_classifier(m)]
        options = {id(m): {"zipmap": False} for m in classifiers} or None
        onnx_model = convert_sklearn(
            model,
            initial_types=[(input_name, FloatTensorType(shape))],
            target_opset=opset,
            options=options,
        )
        atomic_write_bytes(path, onnx_model.SerializeToString())
        return {"opset": opset, "skl2onnx": str(skl2onnx_version)}

    # -- end of forgeml.export --------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _estimators(model: Any) -> list[Any]:
    """``model`` and the estimators nested in it (pipeline steps, meta-estimators)."""
    found = [model]
    for value in model.get_params(deep=True).values():
        if isinstance(value, sklearn.base.BaseEstimator):
            found.append(value)
    return found


def _is_safe_class(name: str) -> bool:
    """True when ``name`` (``"pkg.module.Class"``) is a class of one of :data:`SAFE_PACKAGES`."""
    parts = name.split(".")
    if parts[0] not in SAFE_PACKAGES or any(p.startswith("__") for p in parts):
        return False  # dunder parts (e.g. numpy.f2py.__main__) could run code on import
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue  # "pkg.module.Outer.Inner": try a shorter module path
        except Exception:
            return False
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        return isinstance(found, type)
    return False


adapter = SklearnAdapter()
