"""The ``tensorflow`` agent (alias ``keras``): a Keras model from a forgeml archive.

The model predicts with ``predict_on_batch`` (compiled) under ``keras.device``.
``threads`` sets TensorFlow's intra-op threads, which TensorFlow accepts only
before its runtime starts (``info["threads"]`` then says ``default``).
"""

from __future__ import annotations

from forgeml.eval.agents._base import FrameworkAgent


class TensorFlowAgent(FrameworkAgent):
    name = "tensorflow"
    framework = "tensorflow"
    adapter_name = "keras"
    packages = ("tensorflow", "keras")  # the agent runs Keras on the TensorFlow backend
    runs = "a Keras model or layer (keras.Layer)"


agent = TensorFlowAgent()
