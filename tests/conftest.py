"""Test-wide settings."""

import os

# TensorFlow is not part of the test environment: Keras 3 runs on the torch backend.
os.environ.setdefault("KERAS_BACKEND", "torch")
