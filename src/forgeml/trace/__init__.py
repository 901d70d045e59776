"""Leveled tracing: spans from the application down to operators and hardware counters.

A :class:`Tracer` records spans at or above its :class:`TraceLevel`
(``NO_TRACE < APPLICATION < MODEL < FRAMEWORK < LIBRARY < HARDWARE < FULL``) in
a bounded buffer, cheaply, and converts them only at export: to a Chrome trace
file that Perfetto opens (:func:`write_chrome_trace`), or over OTLP to any
OpenTelemetry collector (:func:`send_otlp`). ``forgeml.eval.evaluate(trace_level=...)``
(``forgeml eval --trace_level``) traces an evaluation; :func:`summarize`
(``forgeml trace summary FILE``) says where the time went. Exporters are
registered in :data:`TRACE_EXPORTERS`, per-framework layer tracers in
:data:`LAYER_TRACERS`.
"""

from forgeml._core._errors import TraceError
from forgeml.trace._chrome import chrome_trace
from forgeml.trace._levels import TraceLevel, parse_level
from forgeml.trace._otlp import otlp_settings
from forgeml.trace._registries import (
    LAYER_TRACERS,
    TRACE_EXPORTERS,
    LayerTracer,
    TraceExporter,
)
from forgeml.trace._summary import TraceSummary, load_trace, summarize
from forgeml.trace._tracer import Aggregate, Counter, Tracer


def write_chrome_trace(tracer: Tracer, path: str) -> str:
    """Write ``tracer``'s spans to ``path`` as Chrome trace JSON (opens in Perfetto)."""
    result: str = TRACE_EXPORTERS.load("chrome").export(tracer, path)
    return result


def send_otlp(tracer: Tracer, endpoint: str | None = None, *, protocol: str | None = None) -> str:
    """Send ``tracer``'s spans over OTLP (endpoint and protocol: arguments, else the
    ``OTEL_EXPORTER_OTLP_*`` variables); returns the endpoint."""
    result: str = TRACE_EXPORTERS.load("otlp").export(tracer, endpoint, protocol=protocol)
    return result


__all__ = [
    "LAYER_TRACERS",
    "TRACE_EXPORTERS",
    "Aggregate",
    "Counter",
    "LayerTracer",
    "TraceError",
    "TraceExporter",
    "TraceLevel",
    "TraceSummary",
    "Tracer",
    "chrome_trace",
    "load_trace",
    "otlp_settings",
    "parse_level",
    "send_otlp",
    "summarize",
    "write_chrome_trace",
]
