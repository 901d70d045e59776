"""The entry for ``trainable.yml``: fit the configured Trainable on digits, pruning per epoch."""

from __future__ import annotations

import functools

import numpy as np

from forgeml import tune
from forgeml.data import NumpyDataset
from forgeml.eval import load_bundled


@functools.lru_cache(maxsize=1)
def digits():
    """scikit-learn's bundled digits (forgeml's fixed split) as supervised datasets."""
    train, test = load_bundled("digits:train"), load_bundled("digits")
    return (
        NumpyDataset((train.x.astype(np.float32) / 16, train.y), supervised=True),
        NumpyDataset((test.x.astype(np.float32) / 16, test.y), supervised=True),
    )


def train(cfg):
    """Build ``cfg.trainable`` and fit it with ``cfg.seed``; ``tune.callback()`` reports
    each epoch's ``val_accuracy`` and stops the loop when the pruner says so."""
    train_ds, val_ds = digits()
    trainable = tune.object_def(cfg.trainable).build()
    result = trainable.fit(train_ds, val_ds, seed=cfg.seed, callbacks=[tune.callback()])
    return {"val_accuracy": result.last["val_accuracy"], "object": trainable}
