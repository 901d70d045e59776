"""The extension points of evaluation: agents run models, tasks prepare data and score.

An :class:`Agent` loads a manifest's model with one framework and predicts on
a batch; it knows nothing of tasks. A :class:`Task` reads datasets, turns raw
samples into model inputs (as the manifest's inputs say), turns model outputs
into predictions, and scores them. The runner times the three steps per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from forgeml.eval._manifest import Manifest


@runtime_checkable
class Predictor(Protocol):
    """A loaded model on a device."""

    #: What ran it: framework and library versions, device name, threads.
    info: Mapping[str, str]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model outputs for a preprocessed batch (first axis: samples)."""
        ...

    def synchronize(self) -> None:
        """Wait for the device to finish (no-op on CPU), so timings are true."""
        ...

    def close(self) -> None:
        """Release the model and its device memory."""
        ...

    # Optional: ``session() -> context manager`` that the runner holds open around
    # all predict calls (e.g. torch inference mode entered once, not per batch).


@runtime_checkable
class Agent(Protocol):
    #: the registry name, e.g. ``"pytorch"``
    name: str
    #: the manifest framework it runs (see ``forgeml.eval.FRAMEWORK_NAMES``)
    framework: str

    def unavailable(self) -> str | None:
        """Why this agent cannot run here (missing package, no GPU), or None."""
        ...

    def load(
        self, manifest: Manifest, *, device: str = "cpu", threads: int | None = None
    ) -> Predictor:
        """Load the manifest's weights (resolved and verified) onto ``device``."""
        ...


@dataclass(slots=True)
class Batch:
    """Raw samples as a task reads them, with labels when the dataset has them."""

    raw: Any
    labels: np.ndarray | None
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EvalData:
    """A dataset ready for a task: its batches, and what went wrong while reading it."""

    name: str
    size: int
    batches: Any  # Callable[[int], Iterator[Batch]]: batch size -> batches
    has_labels: bool = True
    #: Files or records skipped, with the reason ("img/3.png: not an image (truncated)").
    problems: list[str] = field(default_factory=list)

    def iter_batches(self, batch_size: int) -> Iterator[Batch]:
        iterator: Iterator[Batch] = self.batches(batch_size)
        return iterator


@runtime_checkable
class Metrics(Protocol):
    """Accumulates a task's metrics batch by batch (memory does not grow with batches)."""

    def update(self, predictions: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> None: ...

    def result(self) -> dict[str, Any]:
        """Named metrics: numbers, plus tables (lists) such as a confusion matrix."""
        ...


@runtime_checkable
class Task(Protocol):
    name: str
    #: the manifest output type it accepts: ``"classification"`` or ``"regression"``
    output_type: str

    def load_dataset(
        self, source: Any, manifest: Manifest, *, limit: int | None = None
    ) -> EvalData:
        """A dataset by name (``digits``), path (folder, ``.npz``, ``.csv``) or Dataset."""
        ...

    def preprocess(self, raw: Any, manifest: Manifest) -> np.ndarray:
        """Raw samples -> the model input batch the manifest describes."""
        ...

    def postprocess(self, outputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        """Model outputs -> predictions (class indices, or values)."""
        ...

    def metrics(self, manifest: Manifest) -> Metrics: ...
