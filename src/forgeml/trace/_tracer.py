"""The tracer: spans recorded cheaply in a bounded buffer, converted only at export.

A span is one tuple ``(id, parent, name, level, start_ns, end_ns, attrs)`` appended
to a list that never grows past ``capacity``: when it is full, spans are dropped
and counted (:attr:`Tracer.dropped`), never waited for. Times are
``time.perf_counter_ns`` readings; :attr:`Tracer.epoch_ns` turns them into wall
clock time at export. Nothing is formatted, allocated per attribute or sent while
the traced code runs: the exporters (:mod:`forgeml.trace._chrome`,
:mod:`forgeml.trace._otlp`) convert after the timed part.

A span of a level deeper than the tracer's is a no-op: :meth:`Tracer.span`
compares two ints and returns a shared null context.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forgeml._core._errors import TraceError
from forgeml.trace._levels import TraceLevel, parse_level

#: Spans kept at most per trace (about 150 bytes each in memory).
DEFAULT_CAPACITY = 500_000
#: Batches traced in full at LIBRARY level; later ones have their operators aggregated per layer.
DEFAULT_SAMPLE_BATCHES = 10
#: Counter samples kept at most (HARDWARE level).
DEFAULT_COUNTER_CAPACITY = 100_000

#: One recorded span: (id, parent id (0: none), name, level, start ns, end ns, attributes).
SpanRecord = tuple[int, int, str, int, int, int, Mapping[str, Any] | None]

_NULL = contextlib.nullcontext()


@dataclass
class Aggregate:
    """Operators folded together: calls of one op (or kernel) in one layer, beyond the sample."""

    layer: str
    name: str
    kind: str = "op"  # "op" or "kernel"
    count: int = 0
    total_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "total_us": round(self.total_ns / 1000, 3),
        }


@dataclass
class Counter:
    """A sampled value series (HARDWARE level): ``(ts_ns, {series: value})`` samples."""

    name: str
    samples: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class _Span:
    """The context manager :meth:`Tracer.span` returns for an enabled level."""

    __slots__ = ("attrs", "level", "name", "tracer")

    def __init__(
        self, tracer: Tracer, name: str, level: int, attrs: Mapping[str, Any] | None
    ) -> None:
        self.tracer = tracer
        self.name = name
        self.level = level
        self.attrs = attrs

    def __enter__(self) -> int:
        return self.tracer.start(self.name, self.level, self.attrs)

    def __exit__(self, *exc: object) -> None:
        self.tracer.end()


class Tracer:
    """Records spans up to ``level`` (a :class:`TraceLevel`, name or number).

    ``capacity`` bounds the spans kept (the rest are counted in :attr:`dropped`);
    ``sample_batches`` is how many batches a framework tracer keeps operator by
    operator before it aggregates them per layer (:meth:`aggregate`).

    Two ways to record:

    - ``with tracer.span("load", TraceLevel.APPLICATION, path=p): ...`` (or
      :meth:`start`/:meth:`end`): a stack of open spans gives each its parent.
    - :meth:`record`: a finished span with times and parent the caller measured
      (the runner's hot loop, which reads the clock anyway).
    """

    def __init__(
        self,
        level: Any = TraceLevel.MODEL,
        *,
        capacity: int = DEFAULT_CAPACITY,
        sample_batches: int = DEFAULT_SAMPLE_BATCHES,
        counter_capacity: int = DEFAULT_COUNTER_CAPACITY,
        name: str = "forgeml",
    ) -> None:
        for option, value in (
            ("capacity", capacity),
            ("sample_batches", sample_batches),
            ("counter_capacity", counter_capacity),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TraceError(
                    f"The '{option}' of a tracer must be a non-negative integer. Got {value!r}."
                )
        self.level = int(parse_level(level))
        self.capacity = capacity
        self.sample_batches = sample_batches
        self.counter_capacity = counter_capacity
        self.name = name
        self.spans: list[SpanRecord] = []
        self.dropped = 0
        self.counters: dict[str, Counter] = {}
        self.counter_samples = 0
        self.counters_dropped = 0
        self.aggregates: dict[tuple[str, str, str], Aggregate] = {}
        #: Batches whose operators were aggregated rather than kept as spans.
        self.aggregated_batches = 0
        #: Free-form facts about the run (model, agent, batch size...), exported with the trace.
        self.meta: dict[str, Any] = {}
        #: What the tracer could not do (a framework without layer hooks, ...), for the result.
        self.notes: list[str] = []
        self.pid = os.getpid()
        self.tid = threading.get_ident()
        self.clock = time.perf_counter_ns
        # perf_counter_ns + epoch_ns = Unix time in ns (read together, once).
        self.epoch_ns = time.time_ns() - self.clock()
        self.origin_ns = self.clock()
        self._next = 1
        self._stack: list[tuple[int, str, int, int, Mapping[str, Any] | None]] = []

    # -- levels -------------------------------------------------------------------------------

    def enabled(self, level: int) -> bool:
        """Whether spans of ``level`` are recorded."""
        return 0 < level <= self.level

    @property
    def level_name(self) -> str:
        return TraceLevel(self.level).name

    # -- recording ----------------------------------------------------------------------------

    def new_id(self) -> int:
        """A fresh span id (ids start at 1; 0 means "no parent")."""
        sid = self._next
        self._next = sid + 1
        return sid

    @property
    def current(self) -> int:
        """The id of the innermost open span (0 when none is open)."""
        stack = self._stack
        return stack[-1][0] if stack else 0

    def record(
        self,
        sid: int,
        parent: int,
        name: str,
        level: int,
        start_ns: int,
        end_ns: int,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep a finished span; drop it (and count it) when the buffer is full."""
        spans = self.spans
        if len(spans) < self.capacity:
            spans.append((sid, parent, name, level, start_ns, end_ns, attrs))
        else:
            self.dropped += 1

    def start(
        self,
        name: str,
        level: int = TraceLevel.APPLICATION,
        attrs: Mapping[str, Any] | None = None,
        start_ns: int | None = None,
    ) -> int:
        """Open a span (a child of the innermost open one); returns its id.

        Check :meth:`enabled` first on hot paths: this records whatever level it is given.
        """
        sid = self._next
        self._next = sid + 1
        self._stack.append(
            (sid, name, level, self.clock() if start_ns is None else start_ns, attrs)
        )
        return sid

    def end(self, attrs: Mapping[str, Any] | None = None, end_ns: int | None = None) -> None:
        """Close the innermost open span (``attrs`` are added to those given at the start)."""
        end = self.clock() if end_ns is None else end_ns
        stack = self._stack
        sid, name, level, start, first = stack.pop()
        if attrs:
            first = {**first, **attrs} if first else attrs
        parent = stack[-1][0] if stack else 0
        spans = self.spans
        if len(spans) < self.capacity:
            spans.append((sid, parent, name, level, start, end, first))
        else:
            self.dropped += 1

    def span(
        self, name: str, level: int = TraceLevel.APPLICATION, **attrs: Any
    ) -> contextlib.AbstractContextManager[Any]:
        """``with tracer.span(name, level, key=value):`` — a no-op above the tracer's level."""
        if level > self.level or level <= 0:
            return _NULL
        return _Span(self, name, level, attrs or None)

    def close_open(self) -> None:
        """End every span still open (after an error inside one), innermost first."""
        while self._stack:
            self.end({"error": True})

    # -- counters and aggregates --------------------------------------------------------------

    def counter(self, name: str, values: dict[str, float], ts_ns: int | None = None) -> None:
        """A sample of counter ``name`` (``{"rss_mb": 812.5}``); bounded like spans."""
        if self.counter_samples >= self.counter_capacity:
            self.counters_dropped += 1
            return
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = Counter(name)
        series.samples.append((self.clock() if ts_ns is None else ts_ns, values))
        self.counter_samples += 1

    def aggregate(
        self, layer: str, name: str, duration_ns: int, *, kind: str = "op", count: int = 1
    ) -> None:
        """Fold ``count`` calls of op (or kernel) ``name`` in ``layer`` into one entry."""
        key = (layer, name, kind)
        entry = self.aggregates.get(key)
        if entry is None:
            entry = self.aggregates[key] = Aggregate(layer, name, kind)
        entry.count += count
        entry.total_ns += duration_ns

    # -- reading ------------------------------------------------------------------------------

    def to_unix_ns(self, perf_ns: int) -> int:
        return perf_ns + self.epoch_ns

    def stats(self) -> dict[str, Any]:
        """What was recorded: spans kept and dropped, counter samples, aggregated ops."""
        return {
            "level": self.level_name,
            "spans": len(self.spans),
            "dropped": self.dropped,
            "counter_samples": self.counter_samples,
            "counters_dropped": self.counters_dropped,
            "aggregated_ops": len(self.aggregates),
            "aggregated_batches": self.aggregated_batches,
        }

    def __repr__(self) -> str:
        return f"Tracer(level={self.level_name}, spans={len(self.spans)}, dropped={self.dropped})"
