"""ONNX export of the PyTorch zoo models, checked by onnx and by onnxruntime.

``torch.onnx.export(..., dynamo=False)`` writes one self-contained ``.onnx``
file (opset 17) with a dynamic batch axis; :func:`export_onnx` then runs
``onnx.checker`` and compares onnxruntime's outputs with torch's on a batch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from forgeml._core._errors import EvalError
from forgeml._core._files import atomic_path
from forgeml.eval.zoo.torch_models import one_thread

OPSET = 17
#: The largest difference between torch's and onnxruntime's outputs that passes.
TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(
    model: Any, batch: np.ndarray, path: str | os.PathLike[str], *, tolerance: float = TOLERANCE
) -> float:
    """Export ``model`` to ``path`` (atomically) and check it; returns the max abs difference.

    ``batch`` is a batch of model inputs (e.g. from the test split): its first
    sample traces the model, and the whole batch is compared. A difference of
    ``tolerance`` or more raises :class:`~forgeml.EvalError` and writes nothing.
    """
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    model.eval()
    with atomic_path(path) as tmp, one_thread():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (torch.from_numpy(batch[:1]),),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        onnx.checker.check_model(str(tmp), full_check=True)
        difference = parity(model, tmp, batch)
        if not difference < tolerance:
            raise EvalError(
                f"The ONNX export of {type(model).__qualname__} differs from the torch model "
                f"by {difference:.3g} (allowed: < {tolerance:g}) on a batch of {len(batch)}."
            )
    return difference


def parity(model: Any, onnx_path: str | os.PathLike[str], batch: np.ndarray) -> float:
    """The max abs difference between ``model`` (torch) and the ONNX file on ``batch``."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    with torch.no_grad(), one_thread():
        expected = model(torch.from_numpy(batch)).numpy()
    actual = run_onnx(onnx_path, batch)
    if actual.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(actual - expected))) if expected.size else 0.0


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
