"""``Pipe``: models in a chain, each one's outputs the next one's inputs, across frameworks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from forgeml._core._errors import TrainError
from forgeml.objects import Object, ObjectDef
from forgeml.train._loop import backend, framework_model
from forgeml.train._result import TrainResult
from forgeml.train._trainable import inputs


class Pipe(Object):
    """Stages trained and used one after the other: ``Pipe(scaler, pca, mlp)``.

    Each stage is a :class:`Trainable` (or another Pipe), given as an
    ObjectDef or an Object. :meth:`fit` trains the first stage on the data,
    turns the data into its outputs (:meth:`Trainable.transform`: a
    transformer's ``transform``, a model's outputs), trains the next on those,
    and so on; ``predict``/``evaluate`` run every stage. The whole chain saves
    to one archive and rebuilds from one definition.
    """

    def __init__(self, *stages: Any) -> None:
        if not stages:
            raise TrainError("Pipe needs at least one stage: Pipe(first, second, ...).")
        built: list[Any] = []
        for i, stage in enumerate(stages):
            value = stage.build() if isinstance(stage, ObjectDef) else stage
            if not isinstance(value, Object) or not all(
                callable(getattr(value, m, None)) for m in ("fit", "transform", "predict")
            ):
                raise TrainError(
                    f"Stage {i} of the Pipe must be a Trainable or a Pipe (or an ObjectDef of "
                    f"one). Got {stage!r} ({type(stage).__name__})."
                )
            built.append(value)
        self.stages = built

    def fit(
        self,
        train: Any,
        val: Any = None,
        *,
        seed: int | None = None,
        callbacks: Sequence[Any] = (),
    ) -> TrainResult:
        """Train every stage in turn; the result is the last stage's, with ``stages`` filled.

        ``seed`` seeds each stage; ``callbacks`` go to the last stage (the one
        whose metrics are the Pipe's).
        """
        results: list[TrainResult] = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            result = stage.fit(train, val, seed=seed, callbacks=callbacks if i == last else ())
            results.append(result)
            if i < last:
                train = stage.transform(train)
                val = stage.transform(val) if val is not None else None
        final = TrainResult(**{**vars(results[-1]), "stages": results})
        final.seconds = sum(r.seconds for r in results)
        return final

    @property
    def result(self) -> TrainResult | None:
        """The last stage's result once trained."""
        last: TrainResult | None = getattr(self.stages[-1], "result", None)
        return last

    def transform(self, data: Any) -> Any:
        """The last stage's outputs, as a supervised NumpyDataset of ``(outputs, y)``."""
        for stage in self.stages:
            data = stage.transform(data)
        return data

    def predict(self, data: Any) -> np.ndarray:
        """The outputs of the last stage for ``data`` (an array or a Dataset)."""
        for stage in self.stages[:-1]:
            data = _outputs(stage, data)
        return np.asarray(self.stages[-1].predict(data))

    def evaluate(
        self, ds: Any, metrics: Iterable[str] | str = ("accuracy",), **options: Any
    ) -> dict[str, float]:
        """Metrics of the whole chain on ``ds`` (see :meth:`Trainable.evaluate`)."""
        for stage in self.stages[:-1]:
            ds = stage.transform(ds)
        result: dict[str, float] = self.stages[-1].evaluate(ds, metrics, **options)
        return result


def _outputs(stage: Any, data: Any) -> Any:
    """``stage``'s outputs for ``data``: a Dataset of ``(outputs, y)``, or an array."""
    from forgeml.data import Dataset

    if isinstance(data, Dataset) and data.supervised:
        return stage.transform(data)
    if isinstance(stage, Pipe):
        for inner in stage.stages:
            data = _outputs(inner, data)
        return data
    net, framework = framework_model(stage.model)
    return backend(framework).transform(net, inputs(data))
