"""The ``image_classification`` task: images in, class scores out, accuracy metrics.

Datasets: the bundled ``digits`` (``digits:train``, ``digits:all``), a folder of
images (one sub-folder per class; flat: predictions only), an ``.npz`` file
(``x``: images ``(N, H, W)`` or ``(N, H, W, C)``, ``y``: labels), a
``forgeml.data.Dataset`` of ``(image, label)`` samples, or an ``(x, y)`` pair of
arrays. Metrics: top-1 and top-5 accuracy, per-class precision, recall and F1,
their macro averages, and the confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import EvalData
from forgeml.eval.tasks._common import class_indices, image_plan, preprocess_images
from forgeml.eval.tasks._datasets import (
    array_batches,
    encode_labels,
    folder_batches,
    read_arrays,
    read_bundled,
    read_dataset,
    read_npz,
    scan_folder,
    source_kind,
)
from forgeml.eval.tasks._metrics import ClassificationMetrics


class ImageClassification:
    """Classify images: :func:`preprocess_images`, argmax, :class:`ClassificationMetrics`."""

    name = "image_classification"
    output_type = "classification"

    def load_dataset(
        self, source: Any, manifest: Manifest, *, limit: int | None = None
    ) -> EvalData:
        kind = source_kind(source, "image")
        if kind == "folder":
            folder = scan_folder(Path(source).expanduser())
            labels = folder.labels
            if labels is not None:
                labels = encode_labels(labels, folder.classes, manifest, str(source))
            return folder_batches(folder, labels, image_plan(manifest.input).channels, limit)
        if kind == "csv":
            from forgeml._core._errors import EvalError

            raise EvalError(
                f"The image_classification task does not read .csv files ({source}). Give a "
                f"folder of images or an .npz file (x: images, y: labels)."
            )
        if kind == "bundled":
            data = read_bundled(str(source), "image", ("image",))
        elif kind == "npz":
            data = read_npz(Path(source).expanduser())
        elif kind == "dataset":
            data = read_dataset(source, limit)
        else:
            data = read_arrays(source)
        labels = None
        if data.y is not None:
            labels = encode_labels(data.y, data.classes, manifest, data.name)
        return array_batches(data.name, data.x, labels, ids=data.ids, limit=limit)

    def preprocess(self, raw: Any, manifest: Manifest) -> np.ndarray:
        return preprocess_images(raw, manifest.input)

    def postprocess(self, outputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        return class_indices(outputs)

    def metrics(self, manifest: Manifest) -> ClassificationMetrics:
        return ClassificationMetrics(manifest.output.labels, top5=True)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


task = ImageClassification()
