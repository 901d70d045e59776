"""What a zoo entry is: how to train a model on a bundled dataset, and what it expects.

A :class:`ZooBuilder` ties together the bundled dataset a model trains on, the
function that turns raw samples into the model's inputs (exactly what the
model's manifests describe), the training function and the function that
reads the model's outputs. Nothing here imports an ML framework.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgeml.eval._bundled import BUNDLED, load_bundled
from forgeml.objects import Object

#: Raw samples as :func:`forgeml.eval.load_bundled` returns them -> the model's input batch.
InputFn = Callable[[np.ndarray], np.ndarray]
#: (model inputs, targets) -> a trained model.
TrainFn = Callable[[np.ndarray, np.ndarray], Object]
#: (trained model, model inputs) -> model outputs (class scores [N, C], or values).
ScoreFn = Callable[[Any, np.ndarray], np.ndarray]

#: The seed every zoo recipe uses.
SEED = 0
#: Significant digits of the standardisation statistics (as written in the manifests).
STAT_DIGITS = 6


@dataclass(frozen=True)
class ZooBuilder:
    """How to build one zoo model: called, it trains on ``"<dataset>:train"`` and returns it.

    The model is a :class:`forgeml.Object` (saved with :func:`forgeml.save_object`).
    ``inputs`` turns raw samples into what the model takes, which is what the
    model's manifests describe; ``scores`` runs the model on such a batch.
    ``onnx`` builders (PyTorch models) are also exported to ONNX.
    """

    name: str
    #: The manifest framework of the saved archive: pytorch, tensorflow, sklearn or xgboost.
    framework: str
    #: The bundled dataset it trains on (the ``train`` part) and is scored on (``test``).
    dataset: str
    train: TrainFn
    inputs: InputFn
    scores: ScoreFn
    onnx: bool = False
    description: str = ""

    @property
    def output_type(self) -> str:
        """``"classification"`` or ``"regression"`` (from the dataset)."""
        return "regression" if BUNDLED[self.dataset][1] == "regression" else "classification"

    def __call__(self) -> Object:
        """Train the model on the dataset's train part (seeded: the same model every time)."""
        data = load_bundled(f"{self.dataset}:train")
        return self.train(self.inputs(data.x), data.y)

    def evaluate(self, model: Any, part: str = "test") -> dict[str, float]:
        """The model's accuracy (classification) or R² (regression) on a part of the dataset."""
        data = load_bundled(f"{self.dataset}:{part}")
        outputs = np.asarray(self.scores(model, self.inputs(data.x)))
        return score_outputs(outputs, data.y, self.output_type)


def score_outputs(outputs: np.ndarray, targets: np.ndarray, output_type: str) -> dict[str, float]:
    """Accuracy of class scores ``[N, C]``, or R² of values ``[N]`` / ``[N, 1]``."""
    if output_type == "classification":
        accuracy = float(np.mean(np.argmax(outputs, axis=1) == targets))
        return {"accuracy": round(accuracy, 4)}
    predicted = outputs.reshape(len(targets))
    residual = float(np.sum((targets - predicted) ** 2))
    total = float(np.sum((targets - np.mean(targets)) ** 2))
    return {"r2": round(1.0 - residual / total, 4)}


# ----------------------------------------------------------------------------- inputs


def _round(values: np.ndarray) -> np.ndarray:
    return np.array([float(f"{v:.{STAT_DIGITS}g}") for v in values], dtype=np.float64)


@functools.cache
def standardization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature ``(mean, scale)`` of a dataset's train part: ``(x - mean) * scale``
    has mean 0 and variance 1. Rounded to :data:`STAT_DIGITS` significant digits,
    as the manifests write them."""
    x = load_bundled(f"{dataset}:train").x.astype(np.float64)
    mean = _round(x.mean(axis=0))
    std = x.std(axis=0)
    scale = _round(np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in scale)


def digits_inputs(layout: str) -> InputFn:
    """8x8 digits (values 0..16) scaled by 1/16, as ``NCHW`` [1, 8, 8], ``NHWC`` [8, 8, 1]
    or ``flat`` [64] float32."""
    shapes = {"NCHW": (1, 8, 8), "NHWC": (8, 8, 1), "flat": (64,)}
    shape = shapes[layout]

    def inputs(raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float64) * (1.0 / 16.0)
        return x.reshape(len(x), *shape).astype(np.float32)

    return inputs


def tabular_inputs(dataset: str, *, standardize: bool) -> InputFn:
    """Tabular features as float32: standardised with :func:`standardization`, or raw."""

    def inputs(raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float64)
        if standardize:
            mean, scale = standardization(dataset)
            x = (x - np.asarray(mean)) * np.asarray(scale)
        return x.astype(np.float32)

    return inputs


def target_scaling(y: np.ndarray) -> tuple[float, float]:
    """``(mean, std)`` of regression targets, to train on standardised targets."""
    std = float(np.std(y))
    return float(np.mean(y)), std if std > 0 and math.isfinite(std) else 1.0
