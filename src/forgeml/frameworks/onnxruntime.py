"""ONNX Runtime adapter: inference sessions over ``.onnx`` files, on the CPU or a CUDA GPU.

ONNX Runtime runs files, not Python objects, so this adapter saves no state:
:meth:`OnnxRuntimeAdapter.open` turns a ``.onnx`` file into a session and
:meth:`OnnxRuntimeAdapter.predict` runs it on numpy batches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from forgeml._core._errors import ObjectError

#: ONNX tensor element types -> numpy dtypes (the inputs a session casts batches to)
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_FLOATS = ("tensor(float)", "tensor(double)", "tensor(float16)")


class Session:
    """An ``onnxruntime.InferenceSession`` with the input and output a batch goes through.

    The input is the session's first one; the output is the first floating-point
    tensor (a converted scikit-learn classifier outputs its labels first, then the
    probabilities), else the first output.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        first = session.get_inputs()[0]
        self.input_name: str = first.name
        self.input_dtype: Any = _DTYPES.get(first.type)
        outputs = session.get_outputs()
        chosen = next((o for o in outputs if o.type in _FLOATS), outputs[0])
        self.output_name: str = chosen.name
        self.output_names = [self.output_name]

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())


class OnnxRuntimeAdapter:
    name = "onnxruntime"
    module = "onnxruntime"

    # -- forgeml.eval: inference (devices, threads, predict on a batch) ----------------------

    def inference_info(self) -> dict[str, str]:
        return {"framework": "onnxruntime", "version": str(onnxruntime.__version__)}

    def devices(self) -> list[str]:
        """``cpu``, and ``cuda:N`` per NVIDIA GPU when the CUDA execution provider is here."""
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return ["cpu"]
        from forgeml._core._env import nvidia_gpu_count

        return ["cpu"] + [f"cuda:{i}" for i in range(nvidia_gpu_count())]

    def is_model(self, obj: object) -> bool:
        return isinstance(obj, Session)

    def open(
        self, path: str | os.PathLike[str], *, device: str = "cpu", threads: int | None = None
    ) -> Session:
        """An inference session over the ``.onnx`` file at ``path``.

        ``device="cuda:N"`` uses the CUDA execution provider on GPU ``N`` (with the
        CPU provider for the operators it lacks); ``threads`` sets the session's
        intra-op threads.
        """
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            session = onnxruntime.InferenceSession(
                os.fspath(path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ObjectError(f"ONNX Runtime cannot load {Path(path)}: {exc}") from exc
        return Session(session)

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The session as it is (its device and threads were chosen by :meth:`open`)."""
        options = model.session.get_session_options()
        return model, int(options.intra_op_num_threads) or None

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """The session's output for ``batch`` (cast to the input's dtype when it differs).

        A ``ZipMap`` output (a list of ``{class: probability}``) becomes a 2-D array
        with the classes in sorted order.
        """
        array = np.asarray(batch)
        if model.input_dtype is not None and array.dtype != model.input_dtype:
            array = array.astype(model.input_dtype)
        out = model.session.run(model.output_names, {model.input_name: array})[0]
        if isinstance(out, list) and out and isinstance(out[0], dict):
            keys = sorted(out[0])
            return np.array([[row[k] for k in keys] for row in out], dtype=np.float32)
        return np.asarray(out)

    def synchronize(self, device: str) -> None:
        return None  # run() returns host arrays: the device has finished

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.export: checking ONNX files and converting them to half precision ----------

    def check_onnx(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Run ``onnx.checker`` (with shape inference) on the file; returns its opsets.

        ``{"opset": N, "opsets": {"ai.onnx.ml": M, ...}, "onnx": version}``.
        """
        import onnx

        try:
            onnx.checker.check_model(os.fspath(path), full_check=True)
            model = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as exc:  # onnx raises ValidationError, InferenceError, ...
            raise ObjectError(f"{Path(path)} is not a valid ONNX model: {exc}") from exc
        opsets = {entry.domain or "ai.onnx": int(entry.version) for entry in model.opset_import}
        return {
            "opset": opsets.get("ai.onnx"),
            "opsets": opsets,
            "onnx": str(onnx.__version__),
        }

    def convert_float16(self, path: str | os.PathLike[str]) -> None:
        """Rewrite the ONNX file at ``path`` with float16 weights and arithmetic.

        Inputs and outputs stay float32 (casts are inserted at the edges), and the
        operators float16 does not suit (the ``ai.onnx.ml`` tree ensembles, ...) keep
        float32 (onnxruntime's own converter and its default block list).
        """
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        try:
            model = onnx.load(os.fspath(path))
            half = OnnxModel(convert_float_to_float16(model, keep_io_types=True))
            half.topological_sort()  # the converter appends its casts at the end
            onnx.save(half.model, os.fspath(path))
        except Exception as exc:
            raise ObjectError(f"Cannot convert {Path(path)} to float16: {exc}") from exc

    # -- end of forgeml.export --------------------------------------------------------------


adapter = OnnxRuntimeAdapter()
