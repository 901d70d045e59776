"""Latency statistics in fixed memory, however many batches an evaluation runs.

Each phase of an evaluation (preprocess, predict, postprocess, total) keeps a
:class:`LatencyHistogram`: logarithmic buckets from 1 ns to 1 hour, each 0.2%
wide, so a percentile read from it is within 0.1% of the true value (three
significant digits, like HdrHistogram), plus the exact count, minimum, maximum,
mean and standard deviation. Its memory is fixed (113 KB) and does not grow
with the number of values recorded.

Recording is done in chunks: the runner writes raw nanoseconds into a
preallocated list (a few tens of nanoseconds per value) and the chunk is added
to the histogram with numpy every :data:`CHUNK` values, so timing a batch costs
next to nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Values recorded per phase before the chunk is folded into the histogram.
CHUNK = 1024
LOWEST_NS = 1  # perf_counter_ns resolution
HIGHEST_NS = 3_600 * 10**9  # 1 hour
#: Bucket width: neighbouring bucket edges differ by this factor (0.2%).
GROWTH = 1.002
_LOG_GROWTH = math.log(GROWTH)
BUCKETS = math.ceil(math.log(HIGHEST_NS / LOWEST_NS) / _LOG_GROWTH) + 1

#: The percentiles every summary reports.
PERCENTILES = (50.0, 90.0, 95.0, 99.0)


@dataclass(frozen=True)
class LatencyStats:
    """A summary of one phase's per-batch latencies, in milliseconds."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    p25: float
    p75: float

    @property
    def spread(self) -> float | None:
        """Run-to-run spread: interquartile range ÷ median (None without a median)."""
        if self.count < 2 or self.p50 <= 0:
            return None
        return (self.p75 - self.p25) / self.p50

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{name: data.get(name, 0.0) for name in cls.__dataclass_fields__})

    @classmethod
    def empty(cls) -> LatencyStats:
        return cls(0, *([0.0] * 10))


class LatencyHistogram:
    """Latencies in nanoseconds, in fixed memory: log buckets plus exact min/max/mean/std."""

    __slots__ = ("_sum", "_sumsq", "count", "counts", "max_ns", "min_ns")

    def __init__(self) -> None:
        self.counts = np.zeros(BUCKETS, dtype=np.int64)
        self.count = 0
        self.min_ns = 0
        self.max_ns = 0
        self._sum = 0
        self._sumsq = 0.0

    @property
    def nbytes(self) -> int:
        """Memory held by the buckets (constant)."""
        return int(self.counts.nbytes)

    def record(self, values_ns: Sequence[int] | np.ndarray[Any, Any]) -> None:
        """Add many latencies (nanoseconds) at once."""
        values = np.asarray(values_ns, dtype=np.int64)
        if values.size == 0:
            return
        low, high = int(values.min()), int(values.max())
        self.min_ns = low if self.count == 0 else min(self.min_ns, low)
        self.max_ns = high if self.count == 0 else max(self.max_ns, high)
        self.count += int(values.size)
        self._sum += int(values.sum())
        as_float = values.astype(np.float64)
        self._sumsq += float(np.dot(as_float, as_float))
        index = np.floor(np.log(np.maximum(as_float, LOWEST_NS) / LOWEST_NS) / _LOG_GROWTH)
        np.add.at(self.counts, np.minimum(index.astype(np.int64), BUCKETS - 1), 1)

    @property
    def mean_ns(self) -> float:
        return self._sum / self.count if self.count else 0.0

    @property
    def std_ns(self) -> float:
        if self.count < 2:
            return 0.0
        mean = self.mean_ns
        variance = max(self._sumsq / self.count - mean * mean, 0.0)
        return math.sqrt(variance * self.count / (self.count - 1))

    def percentile_ns(self, percentile: float) -> float:
        """The value below which ``percentile`` % of the recorded values lie (0.1% precise)."""
        return float(self.percentiles_ns([percentile])[0])

    def percentiles_ns(self, percentiles: Sequence[float]) -> list[float]:
        if self.count == 0:
            return [0.0 for _ in percentiles]
        cumulative = np.cumsum(self.counts)
        values = []
        for percentile in percentiles:
            # The smallest recorded value with at least `percentile` % of values at or below it.
            share = self.count * min(max(percentile, 0.0), 100.0) / 100.0
            rank = max(1, math.ceil(share - 1e-9 * self.count))  # 99.9% of 1e5 is 99900
            bucket = int(np.searchsorted(cumulative, rank))
            middle = LOWEST_NS * GROWTH ** (bucket + 0.5)  # geometric middle of the bucket
            values.append(min(max(middle, float(self.min_ns)), float(self.max_ns)))
        return values

    def stats(self) -> LatencyStats:
        """The summary in milliseconds."""
        if self.count == 0:
            return LatencyStats.empty()
        p50, p90, p95, p99, p25, p75 = self.percentiles_ns([*PERCENTILES, 25.0, 75.0])
        ms = 1e-6
        return LatencyStats(
            count=self.count,
            min=self.min_ns * ms,
            mean=self.mean_ns * ms,
            p50=p50 * ms,
            p90=p90 * ms,
            p95=p95 * ms,
            p99=p99 * ms,
            max=self.max_ns * ms,
            std=self.std_ns * ms,
            p25=p25 * ms,
            p75=p75 * ms,
        )


class LatencyRecorder:
    """One histogram per phase, fed from preallocated chunk buffers.

    The runner's hot loop writes ``buffers[i][j] = elapsed_ns`` and calls
    :meth:`flush` with ``j`` when a chunk is full (``j == chunk``) and at the end.
    """

    def __init__(self, phases: Sequence[str], chunk: int = CHUNK) -> None:
        self.phases = tuple(phases)
        self.chunk = chunk
        self.histograms = {phase: LatencyHistogram() for phase in self.phases}
        self.buffers: list[list[int]] = [[0] * chunk for _ in self.phases]

    def flush(self, filled: int) -> None:
        """Fold the first ``filled`` values of every buffer into the histograms."""
        if filled <= 0:
            return
        for phase, buffer in zip(self.phases, self.buffers, strict=True):
            self.histograms[phase].record(buffer[:filled])

    def stats(self) -> dict[str, LatencyStats]:
        return {phase: hist.stats() for phase, hist in self.histograms.items()}

    @property
    def nbytes(self) -> int:
        """Memory held by the histograms and buffers (constant: independent of the values)."""
        pointer = 8  # the buffers are lists of small ints: one pointer per slot
        return sum(h.nbytes for h in self.histograms.values()) + sum(
            len(b) * pointer for b in self.buffers
        )
