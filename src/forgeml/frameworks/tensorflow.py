"""TensorFlow/Keras adapter: seeding and determinism."""

from __future__ import annotations

import os

import tensorflow as tf


class TensorFlowAdapter:
    name = "tensorflow"
    module = "tensorflow"

    def seed(self, seed: int, deterministic: bool = False) -> None:
        tf.keras.utils.set_random_seed(seed)
        if deterministic:
            os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
            tf.config.experimental.enable_op_determinism()


adapter = TensorFlowAdapter()
