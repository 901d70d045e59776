"""A small, real agent and task for testing the evaluation runner without a framework.

- agent ``numpy_linear`` (framework ``numpy``): a linear classifier, ``x @ W + b``,
  whose weights are a ``.npz`` file next to its manifest;
- agent ``numpy_jitter``: the same model, sleeping 0 or 2 ms on alternate batches
  (a deliberately noisy predictor, for the spread warning);
- task ``npz_classification``: reads scikit-learn's bundled digits (by name), a
  ``.npz`` file with ``x`` (and optionally ``y``), or ``synthetic:N`` (N random
  digit-shaped samples generated batch by batch, so no memory grows with N);
  skips samples containing NaN (reported as problems); scores top1, top5 and a
  confusion matrix.

:func:`install` registers them (undone after the test by ``monkeypatch``), writes
the model (trained by least squares on ``digits:train``) and its manifest to a
folder on ``FORGEML_MODELS``, and points ``FORGEML_HOME`` at a temp dir.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forgeml.eval import (
    AGENTS,
    TASKS,
    Batch,
    EvalData,
    EvalError,
    Manifest,
    load_bundled,
)

MODEL = "linear_digits"
TASK = "npz_classification"
CLASSES = 10

MANIFEST = f"""\
name: {MODEL}
version: "2"
task: {TASK}
description: A linear least-squares classifier for scikit-learn's 8x8 digits.
framework: {{name: numpy}}
inputs:
  - {{name: image, shape: [64], dtype: float32, layout: flat, mean: [0.0], scale: [0.0625]}}
output: {{type: classification, labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}}
weights: {{path: {MODEL}.npz}}
attributes: {{training_dataset: digits, kind: linear}}
"""


@cache
def trained_weights() -> tuple[np.ndarray, np.ndarray]:
    """W (64, 10) and b (10,): ridge regression onto one-hot targets of digits:train."""
    train = load_bundled("digits:train")
    x = train.x.reshape(len(train.x), -1) / 16.0
    targets = np.eye(CLASSES)[train.y]
    design = np.hstack([x, np.ones((len(x), 1))])
    ridge = 1e-2 * np.eye(design.shape[1])
    solution = np.linalg.solve(design.T @ design + ridge, design.T @ targets)
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


def write_model(directory: Path) -> Path:
    """The model's weights and manifest in ``directory``; returns the manifest path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, bias = trained_weights()
    np.savez(directory / f"{MODEL}.npz", W=weights, b=bias)
    manifest = directory / f"{MODEL}.yml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    return manifest


# ----------------------------------------------------------------------------- agents


class LinearPredictor:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, threads: int | None) -> None:
        self.weights = weights
        self.bias = bias
        self.info = {
            "framework": "numpy",
            "version": np.__version__,
            "device": "cpu",
            "threads": str(threads or "default"),
        }
        self.closed = False
        self.calls = 0
        self.sessions = 0
        self.in_session = False
        self.calls_in_session = 0

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """What the runner holds open around all predict calls (torch: inference_mode)."""
        self.sessions += 1
        self.in_session = True
        try:
            yield
        finally:
            self.in_session = False

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.calls_in_session += self.in_session
        return batch.reshape(len(batch), -1) @ self.weights + self.bias

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class JitterPredictor(LinearPredictor):
    """Alternate batches take 2 ms longer: an IQR/median spread far above 10%."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.calls % 2:
            time.sleep(0.002)
        return super().predict(batch)


@dataclass
class LinearAgent:
    name: str = "numpy_linear"
    framework: str = "numpy"
    jitter: bool = False
    #: the predictors loaded, newest last (tests read their call counts)
    loaded: list[LinearPredictor] = field(default_factory=list)

    def unavailable(self) -> str | None:
        return None

    def load(
        self, manifest: Manifest, *, device: str = "cpu", threads: int | None = None
    ) -> LinearPredictor:
        if device != "cpu":
            raise EvalError(f"Agent '{self.name}' runs on the CPU only. Got device {device!r}.")
        assert manifest.source is not None
        assert manifest.weights.path is not None
        with np.load(manifest.source.parent / manifest.weights.path) as data:
            weights, bias = data["W"], data["b"]
        cls = JitterPredictor if self.jitter else LinearPredictor
        predictor = cls(weights, bias, threads)
        self.loaded.append(predictor)
        return predictor


linear_agent = LinearAgent()
jitter_agent = LinearAgent(name="numpy_jitter", jitter=True)


# ----------------------------------------------------------------------------- task


class ClassificationMetrics:
    """top1, top5 and a confusion matrix, accumulated in fixed memory."""

    def __init__(self, classes: int) -> None:
        self.seen = 0
        self.top1 = 0
        self.top5 = 0
        self.confusion = np.zeros((classes, classes), dtype=np.int64)

    def update(self, predictions: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> None:
        self.seen += len(labels)
        self.top1 += int((predictions == labels).sum())
        top = np.argsort(-outputs, axis=1)[:, :5]
        self.top5 += int((top == labels[:, None]).any(axis=1).sum())
        np.add.at(self.confusion, (labels, predictions), 1)

    def result(self) -> dict[str, Any]:
        return {
            "top1": self.top1 / self.seen,
            "top5": self.top5 / self.seen,
            "confusion_matrix": self.confusion.tolist(),
        }


class NpzClassification:
    name = TASK
    output_type = "classification"

    def load_dataset(
        self, source: Any, manifest: Manifest, *, limit: int | None = None
    ) -> EvalData:
        text = str(source)
        if text.startswith("synthetic:"):
            return self._synthetic(int(text.partition(":")[2]), limit)
        if isinstance(source, str) and not text.endswith(".npz"):
            data = load_bundled(text)
            x, y = data.x, data.y
            name = text
        else:
            path = Path(source)
            if not path.is_file():
                raise EvalError(f"Dataset file '{path}' does not exist.")
            with np.load(path) as arrays:
                x = arrays["x"]
                y = arrays.get("y")
            name = path.name
        keep = ~np.isnan(x.reshape(len(x), -1)).any(axis=1)
        problems = [f"sample {i}: contains NaN" for i in np.flatnonzero(~keep)]
        x = x[keep]
        y = y[keep] if y is not None else None
        if limit is not None:
            x = x[:limit]
            y = y[:limit] if y is not None else None

        def batches(size: int) -> Iterator[Batch]:
            for start in range(0, len(x), size):
                labels = y[start : start + size] if y is not None else None
                ids = [str(i) for i in range(start, min(start + size, len(x)))]
                yield Batch(raw=x[start : start + size], labels=labels, ids=ids)

        return EvalData(
            name=name, size=len(x), batches=batches, has_labels=y is not None, problems=problems
        )

    def _synthetic(self, count: int, limit: int | None) -> EvalData:
        size = min(count, limit) if limit is not None else count

        def batches(batch_size: int) -> Iterator[Batch]:
            rng = np.random.default_rng(0)
            for start in range(0, size, batch_size):
                n = min(batch_size, size - start)
                raw = rng.uniform(0, 16, size=(n, 8, 8))
                labels = rng.integers(0, CLASSES, size=n)
                yield Batch(raw=raw, labels=labels, ids=[str(start + i) for i in range(n)])

        return EvalData(name=f"synthetic:{count}", size=size, batches=batches)

    def preprocess(self, raw: Any, manifest: Manifest) -> np.ndarray:
        spec = manifest.input
        flat = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        return ((flat - spec.mean[0]) * spec.scale[0]).astype(spec.dtype, copy=False)

    def postprocess(self, outputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        return np.asarray(outputs).argmax(axis=1)

    def metrics(self, manifest: Manifest) -> ClassificationMetrics:
        return ClassificationMetrics(len(manifest.output.labels or ()) or CLASSES)


task = NpzClassification()


# ----------------------------------------------------------------------------- install


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Register the agents and the task, write the model, and isolate FORGEML_HOME.

    Returns the models folder (on ``FORGEML_MODELS``). Registrations are undone after
    the test.
    """
    for registry in (AGENTS, TASKS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))
        monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    linear_agent.loaded.clear()
    jitter_agent.loaded.clear()
    AGENTS.register("numpy_linear", "eval_fixtures:linear_agent", aliases=("linear",))
    AGENTS.register("numpy_jitter", "eval_fixtures:jitter_agent")
    TASKS.register(TASK, "eval_fixtures:task")
    models = tmp_path / "models"
    write_model(models)
    monkeypatch.setenv("FORGEML_MODELS", str(models))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return models
