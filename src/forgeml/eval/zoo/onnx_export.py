"""ONNX export of the PyTorch zoo models, checked by onnx and by onnxruntime.

The export is :func:`forgeml.export.export_model` (``pytorch -> onnx``): one
self-contained ``.onnx`` file (opset 17) with a dynamic batch axis, checked with
``onnx.checker`` and against torch's outputs with onnxruntime, written only
when it passes. :func:`run_onnx` runs an ONNX file on a batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime

from forgeml._core._errors import EvalError, ExportError
from forgeml.eval.zoo.torch_models import one_thread

OPSET = 17
#: The largest difference between torch's and onnxruntime's outputs that passes.
TOLERANCE = 1e-4


def export_onnx(
    model: object,
    batch: np.ndarray,
    path: str | os.PathLike[str],
    *,
    tolerance: float = TOLERANCE,
) -> float:
    """Export ``model`` to ``path`` (atomically) and check it; returns the max abs difference.

    ``batch`` is a batch of model inputs (e.g. from the test split): its samples
    trace the model, and the whole batch is compared. A difference above
    ``tolerance`` raises :class:`~forgeml.EvalError` and writes nothing.
    """
    from forgeml.export import export_model

    with one_thread():  # tiny models: more threads only wait for each other
        try:
            result = export_model(
                model,
                np.ascontiguousarray(batch, dtype=np.float32),
                path,
                source="pytorch",
                to="onnx",
                opset=OPSET,
                atol=tolerance,
                rtol=0.0,
                threads=1,
            )
        except ExportError as exc:
            raise EvalError(f"The zoo's ONNX export failed: {exc}") from exc
    return result.parity.max_abs


def run_onnx(path: str | os.PathLike[str], batch: np.ndarray) -> np.ndarray:
    """Outputs of an ONNX model for ``batch`` with onnxruntime on the CPU."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # tiny models: more threads only wait for each other
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(Path(path)), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})
    return np.asarray(outputs[0])
