"""The Chrome trace event format: a JSON file that Perfetto and chrome://tracing open.

Spans become complete events (``"ph": "X"``, times in microseconds from the
trace's start) on one thread track, so nesting shows as a flame chart; each
event's ``args`` carry the span's ``id``, its ``parent`` id and ``level``, and
its attributes. Counter samples (HARDWARE level) become counter events
(``"ph": "C"``). Operators aggregated per layer beyond the sampled batches, the
run's facts and the count of dropped spans go under ``otherData.forgeml``
(``forgeml trace summary`` reads them; the viewers ignore them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from forgeml._core._files import atomic_open
from forgeml.trace._levels import TraceLevel
from forgeml.trace._tracer import Tracer

#: The format's version, in ``otherData.forgeml.format``.
FORMAT = 1
_LEVEL_NAMES = {int(level): level.name for level in TraceLevel}


def chrome_events(tracer: Tracer) -> list[dict[str, Any]]:
    """The trace events of ``tracer``'s spans and counters (metadata first, then by time)."""
    origin = tracer.origin_ns
    pid, tid = tracer.pid, tracer.tid
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": tid, "args": {"name": tracer.name}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": "main"}},
    ]
    spans = sorted(tracer.spans, key=lambda s: (s[4], -s[5]))  # parents before children
    for sid, parent, name, level, start, end, attrs in spans:
        args: dict[str, Any] = {"id": sid, "parent": parent, "level": _LEVEL_NAMES.get(level)}
        if attrs:
            for key, value in attrs.items():
                args[f"attr.{key}" if key in args else key] = _jsonable(value)
        events.append(
            {
                "ph": "X",
                "name": name,
                "cat": _LEVEL_NAMES.get(level, "span").lower(),
                "ts": round((start - origin) / 1000, 3),
                "dur": round(max(end - start, 0) / 1000, 3),
                "pid": pid,
                "tid": tid,
                "args": args,
            }
        )
    for counter in tracer.counters.values():
        for ts, values in counter.samples:
            events.append(
                {
                    "ph": "C",
                    "name": counter.name,
                    "ts": round((ts - origin) / 1000, 3),
                    "pid": pid,
                    "args": values,
                }
            )
    return events


def chrome_trace(tracer: Tracer) -> dict[str, Any]:
    """The whole trace document: ``{"traceEvents": [...], "otherData": {...}}``."""
    from forgeml._version import __version__

    return {
        "traceEvents": chrome_events(tracer),
        "displayTimeUnit": "ms",
        "otherData": {
            "forgeml": {
                "format": FORMAT,
                "version": __version__,
                "level": tracer.level_name,
                "start_unix_ns": tracer.to_unix_ns(tracer.origin_ns),
                "sample_batches": tracer.sample_batches,
                **tracer.stats(),
                "aggregates": [a.to_dict() for a in tracer.aggregates.values()],
                "meta": {k: _jsonable(v) for k, v in tracer.meta.items()},
                "notes": list(tracer.notes),
            }
        },
    }


class ChromeExporter:
    """Writes a trace to a ``.json`` file (atomically); the file opens in Perfetto."""

    name = "chrome"

    def export(self, tracer: Tracer, destination: str | os.PathLike[str]) -> str:
        path = Path(destination).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        document = chrome_trace(tracer)
        with atomic_open(path) as f:
            json.dump(document, f, separators=(",", ":"))
        return str(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


exporter = ChromeExporter()
