"""forgeml.train for Keras 3: a built-in MLP and the Fit procedure over ``model.fit``.

The model is compiled with the Trainable's optimizer and loss, trained with
``model.fit``, and a Keras callback hands every epoch to forgeml's progress
(metrics from :mod:`forgeml.metrics` on the validation data, early stopping,
callbacks, :class:`~forgeml.train.StopTraining`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from forgeml._core._errors import TrainError, did_you_mean
from forgeml.objects import Object

#: forgeml.train's loop records Keras's training loss
REPORTS_LOSS = True
#: portable loss names -> keras.losses classes (and their settings)
LOSSES: dict[str, tuple[str, dict[str, Any]]] = {
    "cross_entropy": ("SparseCategoricalCrossentropy", {"from_logits": True}),
    "mse": ("MeanSquaredError", {}),
    "mae": ("MeanAbsoluteError", {}),
    "l1": ("MeanAbsoluteError", {}),
    "huber": ("Huber", {}),
    "bce": ("BinaryCrossentropy", {"from_logits": True}),
}
_PREDICT_BATCH = 1024


class KerasMLP(Object):
    """A Keras multilayer perceptron held in ``.model``: inputs flattened, ``classes`` logits.

    ``inputs`` is the input shape (``[8, 8]`` for digits) or a feature count.
    """

    def __init__(
        self,
        inputs: int | Sequence[int] = (8, 8),
        classes: int = 10,
        hidden: int | Sequence[int] = (64,),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        shape = (inputs,) if isinstance(inputs, int) else tuple(inputs)
        sizes = [hidden] if isinstance(hidden, int) else list(hidden)
        layers: list[Any] = [keras.Input(shape), keras.layers.Flatten()]
        for size in sizes:
            layers.append(keras.layers.Dense(size, activation=activation))
            if dropout:
                layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(classes))
        self.model = keras.Sequential(layers)


def seed(value: int) -> None:
    keras.utils.set_random_seed(value)


def default_procedure() -> Any:
    from forgeml.train import Fit

    return Fit(epochs=10, batch_size=32)


def scores(net: Any) -> bool:
    return True


def build_optimizer(component: Any) -> Any:
    name, params = (
        ("Adam", {"learning_rate": 1e-3})
        if component is None
        else (
            component.name,
            dict(component.params),
        )
    )
    if "lr" in params:  # torch's name for it
        params["learning_rate"] = params.pop("lr")
    cls = getattr(keras.optimizers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
        known = sorted(
            n
            for n, c in vars(keras.optimizers).items()
            if isinstance(c, type) and issubclass(c, keras.optimizers.Optimizer)
        )
        raise TrainError(
            f"Unknown Keras optimizer '{name}'. Known: {', '.join(known)}."
            + did_you_mean(name, known)
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"Cannot build keras.optimizers.{name}: {exc}") from None


def build_loss(component: Any, y: np.ndarray) -> Any:
    if component is None:
        name, params = ("cross_entropy" if y.dtype.kind in "iub" else "mse"), {}
    else:
        name, params = component.name, dict(component.params)
    cls_name, defaults = LOSSES.get(name, (name, {}))
    cls = getattr(keras.losses, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.losses.Loss)):
        known = [*LOSSES, *sorted(n for n, c in vars(keras.losses).items() if isinstance(c, type))]
        raise TrainError(
            f"Unknown loss '{name}'. Portable names: {', '.join(LOSSES)}; or a keras.losses "
            f"class such as SparseCategoricalCrossentropy." + did_you_mean(name, known)
        )
    return cls(**{**defaults, **params})


def predict(net: Any, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    parts = [
        keras.ops.convert_to_numpy(net(x[i : i + _PREDICT_BATCH], training=False))
        for i in range(0, len(x), _PREDICT_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def transform(net: Any, x: np.ndarray) -> np.ndarray:
    return predict(net, x)


class _Bridge(keras.callbacks.Callback):  # type: ignore[misc]
    """Hands every Keras epoch to forgeml's Progress; stops Keras when it says so."""

    def __init__(self, job: Any) -> None:
        super().__init__()
        self.job = job
        self.best: list[Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        job, progress = self.job, self.job.progress
        metrics = {k: float(logs[k]) for k in ("loss", "val_loss") if k in logs}
        if job.val is not None and progress.metrics:
            outputs = predict(self.model, job.val[0])
            metrics.update(progress.score("val_", job.val[1], outputs))
        progress.epoch_end(epoch + 1, metrics)
        if progress.improved and job.procedure.restore_best:
            self.best = self.model.get_weights()
        if progress.should_stop:
            self.model.stop_training = True


def fit(job: Any) -> None:
    """Run :class:`~forgeml.train.Fit` with ``model.fit``."""
    from forgeml.train import Fit

    procedure, net = job.procedure, job.net
    if not isinstance(procedure, Fit):
        raise TrainError(
            f"Keras models train with the Fit procedure; got {type(procedure).__name__}. Use "
            f"procedure=ObjectDef(Fit, epochs=..., batch_size=...)."
        )
    net.compile(optimizer=build_optimizer(job.optimizer), loss=build_loss(job.loss, job.y))
    bridge = _Bridge(job)
    x = np.asarray(job.x, dtype=np.float32)
    val = None
    if job.val is not None:
        val = (np.asarray(job.val[0], dtype=np.float32), job.val[1])
    net.fit(
        x,
        job.y,
        epochs=procedure.epochs,
        batch_size=procedure.batch_size or 32,
        validation_data=val,
        shuffle=procedure.shuffle,
        callbacks=[bridge],
        verbose=0,
    )
    if bridge.best is not None:
        net.set_weights(bridge.best)
