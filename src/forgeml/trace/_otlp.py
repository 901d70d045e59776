"""OTLP export: the recorded spans sent to an OpenTelemetry collector, Jaeger or Tempo.

Spans are converted at export, after the timed run, into the OpenTelemetry SDK's
``ReadableSpan`` objects (one trace id, span ids derived from forgeml's ids,
parent links kept) and handed to the SDK's OTLP exporter, over HTTP/protobuf or
gRPC, in chunks. The endpoint and protocol come from the arguments, else from
the standard variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``,
``OTEL_EXPORTER_OTLP_PROTOCOL``, headers, timeout...), which the SDK's exporters
read themselves. Counter samples (HARDWARE level) become events on the root
span, and operators aggregated per layer become ``aggregate`` events on it.
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import urlsplit

from forgeml._core._errors import TraceError
from forgeml.trace._levels import TraceLevel
from forgeml.trace._tracer import Tracer

PROTOCOLS = ("http/protobuf", "grpc")
#: Spans per export request.
CHUNK = 512
#: Events kept per span (the SDK's default limit is 128; counters may be many more).
MAX_EVENTS = 10_000
_LEVEL_NAMES = {int(level): level.name for level in TraceLevel}


def otlp_configured() -> bool:
    """Whether the environment names an OTLP endpoint for traces."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def otlp_settings(
    endpoint: str | None = None, protocol: str | None = None
) -> tuple[str, str | None]:
    """(protocol, endpoint URL or None: the SDK reads the environment).

    ``endpoint`` may be ``http(s)://host:port[/path]`` or ``grpc://host:port`` (gRPC);
    an HTTP endpoint without a path gets ``/v1/traces``. The protocol is ``protocol``,
    else ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``/``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``http/protobuf``.
    """
    chosen = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if endpoint is not None and endpoint.startswith("grpc://"):
        chosen = "grpc"
        endpoint = "http://" + endpoint.removeprefix("grpc://")
    chosen = {"http": "http/protobuf", "http/json": "http/json"}.get(chosen, chosen)
    if chosen not in PROTOCOLS:
        raise TraceError(
            f"Unknown OTLP protocol {chosen!r}. Known: {', '.join(PROTOCOLS)} (set "
            f"OTEL_EXPORTER_OTLP_PROTOCOL, or give the endpoint as grpc://HOST:PORT for gRPC)."
        )
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TraceError(
                f"An OTLP endpoint is a URL such as http://127.0.0.1:4318 (HTTP) or "
                f"grpc://127.0.0.1:4317 (gRPC). Got {endpoint!r}."
            )
        if chosen == "http/protobuf" and parts.path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
    return chosen, endpoint


def readable_spans(tracer: Tracer) -> list[Any]:
    """``tracer``'s spans as OpenTelemetry SDK ``ReadableSpan`` objects (one trace)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, TraceFlags

    from forgeml._version import __version__

    trace_id = secrets.randbits(128) or 1
    base = secrets.randbits(63) | 1
    flags = TraceFlags(TraceFlags.SAMPLED)

    def context(sid: int) -> Any:
        return SpanContext(trace_id, (base + sid) & 0xFFFFFFFFFFFFFFFF or 1, False, flags)

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or tracer.name})
    scope = InstrumentationScope("forgeml.trace", __version__)
    epoch = tracer.epoch_ns
    root_events = _root_events(tracer)
    roots = {s[0] for s in tracer.spans if s[1] == 0}
    first_root = min(roots) if roots else None
    spans = []
    for sid, parent, name, level, start, end, attrs in tracer.spans:
        attributes: dict[str, Any] = {"forgeml.level": _LEVEL_NAMES.get(level, str(level))}
        if attrs:
            for key, value in attrs.items():
                attributes[f"forgeml.{key}" if key in ("level", "id") else key] = _attr(value)
        events = root_events if sid == first_root else ()
        if sid == first_root:
            attributes.update({f"forgeml.trace.{k}": _attr(v) for k, v in tracer.stats().items()})
        spans.append(
            ReadableSpan(
                name,
                context=context(sid),
                parent=context(parent) if parent else None,
                resource=resource,
                attributes=attributes,
                events=events,
                start_time=start + epoch,
                end_time=max(end, start) + epoch,
                instrumentation_scope=scope,
            )
        )
    return spans


def _root_events(tracer: Tracer) -> list[Any]:
    from opentelemetry.sdk.trace import Event

    events: list[Any] = []
    for counter in tracer.counters.values():
        for ts, values in counter.samples:
            if len(events) >= MAX_EVENTS:
                break
            events.append(
                Event(counter.name, dict(values), timestamp=ts + tracer.epoch_ns, limit=None)
            )
    end = max((s[5] for s in tracer.spans), default=tracer.origin_ns) + tracer.epoch_ns
    for entry in tracer.aggregates.values():
        if len(events) >= MAX_EVENTS:
            break
        events.append(
            Event(
                "aggregate",
                {
                    "layer": entry.layer,
                    "op": entry.name,
                    "kind": entry.kind,
                    "count": entry.count,
                    "total_us": entry.total_ns / 1000,
                },
                timestamp=end,
                limit=None,
            )
        )
    return events


def _attr(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value):
        return list(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _attr(item())
        except (TypeError, ValueError):
            pass
    return str(value)


class OtlpExporter:
    """Sends a trace to an OTLP endpoint (HTTP/protobuf or gRPC); returns the endpoint."""

    name = "otlp"

    def export(
        self,
        tracer: Tracer,
        destination: str | None = None,
        *,
        protocol: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        chosen, endpoint = otlp_settings(destination, protocol)
        spans = readable_spans(tracer)
        if chosen == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            sdk_exporter: Any = GrpcExporter(endpoint=endpoint, timeout=timeout)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            sdk_exporter = HttpExporter(endpoint=endpoint, timeout=timeout)
        target = endpoint or getattr(sdk_exporter, "_endpoint", None) or "(from environment)"
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            for first in range(0, len(spans), CHUNK):
                outcome = sdk_exporter.export(spans[first : first + CHUNK])
                if outcome is not SpanExportResult.SUCCESS:
                    raise TraceError(
                        f"The OTLP endpoint {target} ({chosen}) did not accept the trace "
                        f"({len(spans)} spans). Check that a collector listens there "
                        f"(--trace_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT)."
                    )
        finally:
            sdk_exporter.shutdown()
        return str(target)


exporter = OtlpExporter()
