"""Keras zoo models (TensorFlow, or any Keras 3 backend): a digits CNN and tabular MLPs.

The Keras model lives in the ``model`` attribute of a :class:`KerasModel`, built
(with its ``keras.Input``) from the constructor arguments; :func:`forgeml.save_object`
stores its weights as ``.weights.h5``. Classifiers output softmax probabilities
``[N, C]``, the regressor values ``[N, 1]``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from forgeml.eval.zoo._builder import (
    SEED,
    ZooBuilder,
    digits_inputs,
    tabular_inputs,
    target_scaling,
)
from forgeml.objects import Object

# isort: off
import forgeml.frameworks.keras  # noqa: F401  (picks the Keras backend before keras loads)
import keras

# isort: on


class KerasModel(Object):
    """A Keras model of one of the zoo's architectures; ``model`` is the ``keras.Model``.

    - ``"cnn"``: two 3x3 convolutions, max-pooling and a dense layer, for NHWC
      images of ``input_shape``;
    - ``"mlp"``: dense layers of the ``hidden`` sizes.

    ``outputs`` > 1 ends in a softmax; ``outputs == 1`` is a regressor whose
    output is mapped back from standardised targets with ``target=(mean, std)``.
    """

    def __init__(
        self,
        kind: str,
        input_shape: tuple[int, ...],
        outputs: int,
        hidden: tuple[int, ...] = (32,),
        target: tuple[float, float] | None = None,
    ) -> None:
        layers: list[Any] = [keras.Input(shape=tuple(input_shape))]
        if kind == "cnn":
            layers += [
                keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
            ]
        elif kind != "mlp":
            raise ValueError(f"KerasModel kind must be 'cnn' or 'mlp'. Got {kind!r}.")
        layers += [keras.layers.Dense(size, activation="relu") for size in hidden]
        if outputs > 1:
            layers.append(keras.layers.Dense(outputs, activation="softmax"))
        else:
            layers.append(keras.layers.Dense(1))
            if target is not None:
                layers.append(keras.layers.Rescaling(scale=target[1], offset=target[0]))
        self.model = keras.Sequential(layers, name=f"zoo_{kind}")


@contextlib.contextmanager
def seeded(seed: int = SEED) -> Iterator[None]:
    """Seed Keras (Python, numpy and backend generators) inside the block.

    The global Python and numpy generators are restored after it.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def fit(
    wrapper: KerasModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-2,
    regression: bool = False,
) -> KerasModel:
    """Train ``wrapper.model`` with Adam; returns a fresh, uncompiled copy holding the weights.

    The copy has no optimizer, so only the model's weights are saved.
    """
    model = wrapper.model
    if regression:
        # Train the layers before the Rescaling on standardised targets.
        mean, std = wrapper.dry_kwargs.get("target") or (0.0, 1.0)
        core = keras.Sequential(model.layers[:-1]) if len(model.layers) > 1 else model
        core.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        targets = ((np.asarray(y, dtype=np.float64) - mean) / std).astype(np.float32)
        core.fit(x, targets, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    else:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    fresh = type(wrapper)(*wrapper.dry_args, **wrapper.dry_kwargs)
    fresh.model.set_weights(model.get_weights())
    return fresh


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's outputs for a batch of inputs, as numpy."""
    network = getattr(model, "model", model)
    out = network(np.asarray(x, dtype=np.float32), training=False)
    return np.asarray(keras.ops.convert_to_numpy(out))


def _train_digits_cnn(x: np.ndarray, y: np.ndarray) -> KerasModel:
    with seeded():
        model = KerasModel("cnn", (8, 8, 1), 10, hidden=(64,))
        return fit(model, x, y, epochs=10, lr=3e-3)


def _tabular(
    hidden: tuple[int, ...], epochs: int, lr: float, batch_size: int
) -> Callable[[np.ndarray, np.ndarray], KerasModel]:
    def train(x: np.ndarray, y: np.ndarray) -> KerasModel:
        with seeded():
            model = KerasModel("mlp", (x.shape[1],), int(y.max()) + 1, hidden=hidden)
            return fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size)

    return train


def _train_diabetes(x: np.ndarray, y: np.ndarray) -> KerasModel:
    # Hidden layers overfit the 331 training samples (test R² < 0.3); a linear model does not.
    with seeded():
        model = KerasModel("mlp", (x.shape[1],), 1, hidden=(), target=target_scaling(y))
        return fit(model, x, y, epochs=10, lr=3e-2, batch_size=64, regression=True)


digits_keras_cnn = ZooBuilder(
    "digits_keras_cnn",
    "tensorflow",
    "digits",
    train=_train_digits_cnn,
    inputs=digits_inputs("NHWC"),
    scores=scores,
    description="A small CNN for 8x8 digits, channels last (Keras).",
)
iris_keras = ZooBuilder(
    "iris_keras",
    "tensorflow",
    "iris",
    train=_tabular((16,), epochs=20, lr=3e-2, batch_size=16),
    inputs=tabular_inputs("iris", standardize=True),
    scores=scores,
    description="An MLP on standardised iris features (Keras).",
)
breast_cancer_keras = ZooBuilder(
    "breast_cancer_keras",
    "tensorflow",
    "breast_cancer",
    train=_tabular((32,), epochs=10, lr=1e-2, batch_size=32),
    inputs=tabular_inputs("breast_cancer", standardize=True),
    scores=scores,
    description="An MLP on standardised breast-cancer features (Keras).",
)
diabetes_keras = ZooBuilder(
    "diabetes_keras",
    "tensorflow",
    "diabetes",
    train=_train_diabetes,
    inputs=tabular_inputs("diabetes", standardize=True),
    scores=scores,
    description="A linear regressor on standardised diabetes features (Keras).",
)
