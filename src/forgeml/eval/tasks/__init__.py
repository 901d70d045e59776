"""Tasks: read datasets, turn raw samples into model inputs, turn outputs into predictions, score.

``get_task("image_classification")`` returns a registered task. The built-in
ones are ``image_classification``, ``tabular_classification`` and
``tabular_regression``; their pre-processing follows the manifest's input
(:func:`preprocess_images`, :func:`preprocess_features`) and their metrics
stream batch by batch (:class:`ClassificationMetrics`, :class:`RegressionMetrics`).
Add your own with ``forgeml.eval.TASKS.register`` or the entry-point group
``forgeml.task``.
"""

from forgeml._core._errors import EvalError, RegistryError
from forgeml.eval._protocols import Task
from forgeml.eval.tasks._common import (
    class_indices,
    convert_channels,
    preprocess_features,
    preprocess_images,
    regression_values,
)
from forgeml.eval.tasks._metrics import ClassificationMetrics, RegressionMetrics
from forgeml.eval.tasks.image_classification import ImageClassification
from forgeml.eval.tasks.tabular_classification import TabularClassification
from forgeml.eval.tasks.tabular_regression import TabularRegression


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name lists the known ones."""
    from forgeml.eval._registries import TASKS

    try:
        task: Task = TASKS.load(name)
    except RegistryError as exc:
        raise EvalError(str(exc)) from None
    return task


__all__ = [
    "ClassificationMetrics",
    "ImageClassification",
    "RegressionMetrics",
    "TabularClassification",
    "TabularRegression",
    "class_indices",
    "convert_channels",
    "get_task",
    "preprocess_features",
    "preprocess_images",
    "regression_values",
]
