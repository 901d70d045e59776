"""The cost of forgeml.trace: throughput per trace level, and the cost of one span.

Headline figures, one JSON line each:

- ``trace_model_level_b1``: samples per second of ``forgeml.eval.evaluate`` on
  the zoo's ``digits_cnn`` (pytorch agent, CPU, batch size 1, ``--batches``
  batches of ``digits:all``) at trace level MODEL ÷ the same at NO_TRACE, in the
  same run; target at least 0.95. The line also has each other level's ratio
  (APPLICATION, FRAMEWORK, LIBRARY, HARDWARE), to show what deeper levels cost.
- ``trace_span_cost``: the cost on the caller's thread of one span, forgeml's
  tracer (``with tracer.span(...)``) against the OpenTelemetry SDK
  (``tracer.start_as_current_span`` with a ``BatchSpanProcessor`` over an exporter
  that discards), ``--spans`` spans each; ``ratio`` is the SDK's cost ÷ forgeml's,
  target at least 2 (forgeml's at most half).

The levels and the two tracers run alternately, ``--runs`` times each; ratios
compare the best run of each (the least disturbed on a shared machine).
Run with ``python benchmarks/trace_overhead.py [--runs N] [--batches N] [--only NAME]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Benchmarks, Record

LEVELS = ("NO_TRACE", "APPLICATION", "MODEL", "FRAMEWORK", "LIBRARY", "HARDWARE")


@dataclass
class Context:
    runs: int
    workdir: Path
    batches: int
    spans: int


BENCHMARKS: Benchmarks[Context] = Benchmarks()


@BENCHMARKS("trace_model_level_b1")
def levels(ctx: Context) -> Record:
    from forgeml.eval import evaluate

    os.environ["FORGEML_HOME"] = str(ctx.workdir / "home")
    options: dict[str, Any] = {
        "agent": "pytorch",
        "dataset": "digits:all",
        "batch_size": 1,
        "num_batches": ctx.batches,
        "num_warmup": 20,
        "threads": 1,
        "store": False,
        "track": False,
    }
    evaluate("digits_cnn", **options)  # load torch, build the zoo model once
    seen: dict[str, list[float]] = {level: [] for level in LEVELS}
    for _ in range(ctx.runs):
        for level in LEVELS:
            result = evaluate("digits_cnn", trace_level=level, **options)
            seen[level].append(result.throughput)
    best = {level: max(values) for level, values in seen.items()}
    base = best["NO_TRACE"]
    return {
        "name": "trace_model_level_b1",
        "ratio": round(best["MODEL"] / base, 4),
        "target": 0.95,
        "throughput": {level: round(value, 1) for level, value in best.items()},
        "median_throughput": {
            level: round(statistics.median(values), 1) for level, values in seen.items()
        },
        "ratios": {level: round(value / base, 4) for level, value in best.items()},
        "batches": ctx.batches,
        "runs": ctx.runs,
    }


@BENCHMARKS("trace_span_cost")
def span_cost(ctx: Context) -> Record:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from forgeml.trace import TraceLevel, Tracer

    class Discard(SpanExporter):  # type: ignore[misc]
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    count = ctx.spans

    def ours() -> float:
        tracer = Tracer("MODEL", capacity=count)
        span = tracer.span
        level = TraceLevel.MODEL
        start = time.perf_counter()
        for _ in range(count):
            with span("predict", level):
                pass
        return (time.perf_counter() - start) / count

    def sdk() -> float:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        tracer = provider.get_tracer("bench")
        start = time.perf_counter()
        for _ in range(count):
            with tracer.start_as_current_span("predict"):
                pass
        elapsed = (time.perf_counter() - start) / count
        provider.shutdown()
        return elapsed

    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(ctx.runs):
        mine.append(ours())
        theirs.append(sdk())
    return {
        "name": "trace_span_cost",
        "ratio": round(min(theirs) / min(mine), 2),
        "target": 2.0,
        "forgeml_us": round(min(mine) * 1e6, 3),
        "otel_sdk_us": round(min(theirs) * 1e6, 3),
        "median_forgeml_us": round(statistics.median(mine) * 1e6, 3),
        "median_otel_sdk_us": round(statistics.median(theirs) * 1e6, 3),
        "spans": count,
    }


def main() -> int:
    parser = BENCHMARKS.parser(__doc__, runs=3)
    parser.add_argument("--batches", type=int, default=1000, help="batches per evaluation")
    parser.add_argument("--spans", type=int, default=20000, help="spans per tracer run")
    args = parser.parse_args()
    names = BENCHMARKS.selected(parser, args, "batches", "spans")
    with tempfile.TemporaryDirectory() as root:
        return BENCHMARKS.run(
            names,
            Path(root),
            lambda workdir: Context(args.runs, workdir, args.batches, args.spans),
        )


if __name__ == "__main__":
    sys.exit(main())
