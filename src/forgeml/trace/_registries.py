"""The extension points of tracing: trace exporters, and layer tracers per framework.

:data:`TRACE_EXPORTERS` maps an exporter name (``chrome``, ``otlp``) to an object
with ``export(tracer, destination) -> str`` (where the trace went).
:data:`LAYER_TRACERS` maps a framework (as a predictor's ``info["framework"]``
names it: ``torch``, ``keras``, ``onnxruntime``) to ``attach(predictor, tracer)``,
which returns a layer tracer (``begin(batch)``, ``end(batch)``, ``close()``) or None.
Third parties add theirs through the entry-point groups
``forgeml.trace_exporters`` and ``forgeml.layer_tracers``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from forgeml._core._registry import Registry

TRACE_EXPORTERS = Registry("trace_exporters")
TRACE_EXPORTERS.register("chrome", "forgeml.trace._chrome:exporter", aliases=("perfetto", "file"))
TRACE_EXPORTERS.register(
    "otlp",
    "forgeml.trace._otlp:exporter",
    hint="pip install 'forgeml[trace]' (the OpenTelemetry SDK and OTLP exporters)",
)

LAYER_TRACERS = Registry("layer_tracers")
LAYER_TRACERS.register(
    "torch", "forgeml.frameworks._trace_torch:attach", hint="pip install 'forgeml[torch]'"
)
LAYER_TRACERS.register(
    "keras", "forgeml.frameworks._trace_keras:attach", hint="pip install 'forgeml[keras]'"
)
LAYER_TRACERS.register(
    "onnxruntime",
    "forgeml.frameworks._trace_onnxruntime:attach",
    hint="pip install 'forgeml[onnx]'",
)


@runtime_checkable
class TraceExporter(Protocol):
    name: str

    def export(self, tracer: Any, destination: Any = None) -> str:
        """Write or send the trace; returns where it went (a path or an endpoint)."""
        ...


@runtime_checkable
class LayerTracer(Protocol):
    """Layer (and operator) spans of one loaded model, attached for a traced run."""

    def begin(self, batch: int) -> None:
        """Called inside the predict span of batch number ``batch``, before predicting."""
        ...

    def end(self, batch: int) -> None:
        """Called inside the predict span, after predicting (and synchronising)."""
        ...

    def close(self) -> None:
        """Detach: remove hooks, put the model back, turn collected profiles into spans."""
        ...
