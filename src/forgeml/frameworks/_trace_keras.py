"""Layer spans for Keras models (forgeml.trace, FRAMEWORK level and deeper).

A compiled Keras model runs as one graph, so Python sees no layer calls. For a
traced run the model predicts eagerly instead (``model(batch, training=False)``)
with every layer's ``call`` wrapped in a span named after the layer (nested
layers nest). Eager execution is slower than ``predict_on_batch``: layer times
say where the time goes; the model-level latency of the untraced (or MODEL
level) run is the one to quote (``--trace_mode leveled``). Keras has no
operator-level hooks: LIBRARY adds nothing here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras

from forgeml.trace._levels import TraceLevel
from forgeml.trace._tracer import Tracer

_FRAMEWORK = int(TraceLevel.FRAMEWORK)


class KerasLayerTracer:
    def __init__(self, predictor: Any, tracer: Tracer) -> None:
        self.predictor = predictor
        self.tracer = tracer
        model = predictor.model
        self.model = model
        self.wrapped: list[Any] = []
        layers = list(model._flatten_layers(include_self=False, recursive=True))
        for layer in layers:
            original = layer.call
            layer.call = self._wrap(original, layer.name, type(layer).__name__)
            self.wrapped.append(layer)
        tracer.meta["layers"] = len(layers)
        self.original_predict = predictor.predict
        predictor.predict = self._predict

    def _wrap(self, original: Any, name: str, kind: str) -> Any:
        start, end = self.tracer.start, self.tracer.end
        attrs = {"type": kind}

        def call(*args: Any, **kwargs: Any) -> Any:
            start(name, _FRAMEWORK, attrs)
            try:
                return original(*args, **kwargs)
            finally:
                end()

        return call

    def _predict(self, batch: Any) -> Any:
        out = self.model(batch, training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, list | tuple):
            out = out[0]
        return keras.ops.convert_to_numpy(out)

    def begin(self, batch: int) -> None:
        return None

    def end(self, batch: int) -> None:
        return None

    def close(self) -> None:
        for layer in self.wrapped:
            with contextlib.suppress(AttributeError):
                del layer.call  # the instance attribute: the class's call shows again
        self.wrapped = []
        self.predictor.predict = self.original_predict


def attach(predictor: Any, tracer: Tracer) -> KerasLayerTracer | None:
    model = getattr(predictor, "model", None)
    if not isinstance(model, keras.Layer):
        tracer.notes.append("The Keras predictor holds no keras.Layer: no layer spans.")
        return None
    return KerasLayerTracer(predictor, tracer)
