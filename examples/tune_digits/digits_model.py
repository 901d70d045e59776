"""A small digits classifier that remembers its definition (a forgeml Object)."""

from __future__ import annotations

import numpy as np
from sklearn.neural_network import MLPClassifier

from forgeml import Object


class DigitsMLP(Object):
    """A one-hidden-layer MLP (scikit-learn) trained one epoch per ``partial_fit`` call."""

    def __init__(self, hidden=32, alpha=1e-4, lr=1e-3, activation="relu", seed=0):
        self.model = MLPClassifier(
            hidden_layer_sizes=(hidden,),
            alpha=alpha,
            learning_rate_init=lr,
            activation=activation,
            batch_size=64,
            random_state=seed,
        )

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model.partial_fit(x, y, classes=np.arange(10))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.model.score(x, y))
