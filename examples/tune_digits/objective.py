"""The entry the search optimises: train the configured model, report accuracy per epoch."""

from __future__ import annotations

import functools

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from forgeml import tune


@functools.lru_cache(maxsize=4)
def digits(seed: int = 0):
    """scikit-learn's bundled digits, scaled to [0, 1]: x_train, x_val, y_train, y_val."""
    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.25, random_state=seed, stratify=y)


def train(cfg):
    """Build ``cfg.model`` (an object definition), train ``cfg.epochs`` epochs on digits.

    Each epoch's validation accuracy goes to ``tune.report``: it is logged to the
    trial's run, and the pruner may stop the trial there.
    """
    x_train, x_val, y_train, y_val = digits(cfg.data_seed)
    model = tune.object_def(cfg.model).build()
    accuracy = 0.0
    for epoch in range(cfg.epochs):
        model.train_epoch(x_train, y_train)
        accuracy = model.accuracy(x_val, y_val)
        tune.report(epoch, accuracy)
    return {"val_acc": accuracy, "object": model}
