"""PyTorch zoo models: a digits CNN and MLPs, trained with fixed seeds and deterministic kernels.

The models are :class:`forgeml.Object` s that are also ``torch.nn.Module`` s, so
:func:`forgeml.save_object` stores their ``state_dict`` as safetensors. They
output class scores (logits) ``[N, C]``, or values ``[N, 1]`` for regression,
and are also exported to ONNX (see :mod:`forgeml.eval.zoo.onnx_export`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from forgeml.eval.zoo._builder import (
    SEED,
    ZooBuilder,
    digits_inputs,
    tabular_inputs,
    target_scaling,
)
from forgeml.objects import Object


class DigitsCNN(Object, torch.nn.Module):  # type: ignore[misc]
    """Two 3x3 convolutions, a 2x2 max-pool and two dense layers, for 8x8 one-channel images."""

    def __init__(
        self, channels: tuple[int, int] = (8, 16), hidden: int = 64, classes: int = 10
    ) -> None:
        super().__init__()
        first, second = channels
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, first, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(first, second, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(second * 4 * 4, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(Object, torch.nn.Module):  # type: ignore[misc]
    """Dense layers with ReLU between them.

    With ``target=(mean, std)`` it is a regressor trained on standardised
    targets: its output is mapped back, ``y = out * std + mean``.
    """

    def __init__(
        self,
        inputs: int,
        outputs: int,
        hidden: tuple[int, ...] = (64,),
        target: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        width = inputs
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        layers.append(torch.nn.Linear(width, outputs))
        self.layers = torch.nn.Sequential(*layers)
        self.target = None if target is None else (float(target[0]), float(target[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        if self.target is not None:
            out = out * self.target[1] + self.target[0]
        return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block.

    These models are tiny: one thread is as fast, much faster when other processes
    share the cores (2 threads took 30 s instead of 1 s on a busy 2-core machine),
    and gives the same numbers on machines with any number of cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def seeded(seed: int = SEED) -> Iterator[None]:
    """Seed torch, use deterministic kernels and one thread inside the block; restore after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def fit(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    regression: bool = False,
    seed: int = SEED,
) -> None:
    """Adam on mini-batches in a seeded order: cross-entropy, or MSE on standardised targets."""
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if regression:
        mean, std = model.target
        targets = torch.from_numpy(((np.asarray(y, dtype=np.float64) - mean) / std)[:, None])
        targets = targets.float()
    else:
        targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    order = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        for batch in np.array_split(order.permutation(len(inputs)), -(-len(inputs) // batch_size)):
            index = torch.from_numpy(batch)
            optimizer.zero_grad()
            out = model.layers(inputs[index]) if regression else model(inputs[index])
            if regression:
                loss = torch.nn.functional.mse_loss(out, targets[index])
            else:
                loss = torch.nn.functional.cross_entropy(out, targets[index])
            loss.backward()
            optimizer.step()
    model.eval()


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's outputs for a batch of inputs, as numpy."""
    model.eval()
    with torch.no_grad(), one_thread():
        out: np.ndarray = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    return out


def _train_digits_cnn(x: np.ndarray, y: np.ndarray) -> DigitsCNN:
    with seeded():
        model = DigitsCNN()
        fit(model, x, y, epochs=10, batch_size=32, lr=3e-3)
    return model


def _train_digits_mlp(x: np.ndarray, y: np.ndarray) -> MLP:
    with seeded():
        model = MLP(64, 10, hidden=(128,))
        fit(model, x, y, epochs=20, batch_size=32, lr=3e-3)
    return model


def _tabular(
    hidden: tuple[int, ...], epochs: int, lr: float = 1e-2, weight_decay: float = 0.0
) -> Callable[[np.ndarray, np.ndarray], MLP]:
    def train(x: np.ndarray, y: np.ndarray) -> MLP:
        with seeded():
            model = MLP(x.shape[1], int(y.max()) + 1, hidden=hidden)
            fit(model, x, y, epochs=epochs, lr=lr, weight_decay=weight_decay)
        return model

    return train


def _train_diabetes(x: np.ndarray, y: np.ndarray) -> MLP:
    with seeded():
        model = MLP(x.shape[1], 1, hidden=(8,), target=target_scaling(y))
        fit(model, x, y, epochs=20, lr=3e-3, weight_decay=1e-2, regression=True)
    return model


digits_cnn = ZooBuilder(
    "digits_cnn",
    "pytorch",
    "digits",
    train=_train_digits_cnn,
    inputs=digits_inputs("NCHW"),
    scores=scores,
    onnx=True,
    description="A small CNN for 8x8 digits (PyTorch).",
)
digits_mlp = ZooBuilder(
    "digits_mlp",
    "pytorch",
    "digits",
    train=_train_digits_mlp,
    inputs=digits_inputs("flat"),
    scores=scores,
    onnx=True,
    description="An MLP (64-128-10) for flattened 8x8 digits (PyTorch).",
)
iris_torch = ZooBuilder(
    "iris_torch",
    "pytorch",
    "iris",
    train=_tabular((32,), epochs=60),
    inputs=tabular_inputs("iris", standardize=True),
    scores=scores,
    onnx=True,
    description="An MLP on standardised iris features (PyTorch).",
)
breast_cancer_torch = ZooBuilder(
    "breast_cancer_torch",
    "pytorch",
    "breast_cancer",
    train=_tabular((32,), epochs=30, lr=3e-3, weight_decay=1e-4),
    inputs=tabular_inputs("breast_cancer", standardize=True),
    scores=scores,
    onnx=True,
    description="An MLP on standardised breast-cancer features (PyTorch).",
)
diabetes_torch = ZooBuilder(
    "diabetes_torch",
    "pytorch",
    "diabetes",
    train=_train_diabetes,
    inputs=tabular_inputs("diabetes", standardize=True),
    scores=scores,
    onnx=True,
    description="An MLP regressor on standardised diabetes features (PyTorch).",
)
