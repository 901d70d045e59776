"""The checks every export passes: the same outputs as the original, and how fast it runs.

:func:`check_parity` compares the exported model's outputs with the original's
on one batch, element by element, as ``numpy.isclose`` does:
``|exported - original| <= atol + rtol * |original|``. :func:`median_latency`
times a predictor on one batch, and :class:`LatencyComparison` lines the
original's and the export's up. The original is timed before the export is
loaded: two runtimes with thread pools of their own slow each other down when
they share a few cores (onnxruntime's workers spin after each run).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Parity:
    """How far the exported model's outputs are from the original's, on one batch."""

    #: The largest ``|exported - original|`` (inf when the shapes differ).
    max_abs: float
    #: The largest ``|exported - original| / |original|`` over non-zero originals.
    max_rel: float
    atol: float
    rtol: float
    #: Values outside ``atol + rtol * |original|`` (NaN where the original is not counts).
    mismatched: int
    #: Values compared.
    elements: int
    #: Samples in the batch.
    samples: int
    #: Share of samples whose highest-scoring class agrees (class scores ``[N, C]`` only).
    top1_agreement: float | None = None
    #: Why the outputs could not be compared at all (shapes), else None.
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.mismatched == 0

    def describe(self) -> str:
        """One line: the differences, what was allowed, and the verdict."""
        if self.problem is not None:
            return f"outputs cannot be compared: {self.problem}"
        agreement = (
            f"; top-1 agreement {self.top1_agreement:.1%}"
            if self.top1_agreement is not None
            else ""
        )
        return (
            f"max abs diff {self.max_abs:.3g}, max rel diff {self.max_rel:.3g} on "
            f"{self.samples} samples (allowed: |diff| <= {self.atol:g} + {self.rtol:g} x "
            f"|original|); {self.mismatched} of {self.elements} values outside{agreement}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Parity:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


def check_parity(
    original: Any, exported: Any, *, atol: float, rtol: float, samples: int | None = None
) -> Parity:
    """Compare two output batches (numpy arrays) with ``numpy.isclose``'s rule.

    Outputs of equal size but another shape (``[N]`` vs ``[N, 1]``) are compared
    after reshaping; otherwise the check fails with the shapes.
    """
    expected = np.asarray(original, dtype=np.float64)
    actual = np.asarray(exported, dtype=np.float64)
    count = samples if samples is not None else (len(expected) if expected.ndim else 1)
    if actual.shape != expected.shape:
        if actual.size != expected.size:
            return Parity(
                max_abs=float("inf"),
                max_rel=float("inf"),
                atol=atol,
                rtol=rtol,
                mismatched=max(actual.size, expected.size),
                elements=expected.size,
                samples=count,
                problem=f"the original gives shape {list(expected.shape)}, the export "
                f"{list(actual.shape)}",
            )
        actual = actual.reshape(expected.shape)
    if expected.size == 0:
        return Parity(0.0, 0.0, atol, rtol, 0, 0, count)
    close = np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = np.abs(actual - expected)
        both_nan = np.isnan(actual) & np.isnan(expected)
        difference = np.where(both_nan, 0.0, difference)
        difference = np.where(np.isnan(difference), np.inf, difference)
        nonzero = expected != 0
        relative = difference[nonzero] / np.abs(expected[nonzero])
    agreement = None
    if expected.ndim == 2 and expected.shape[1] > 1:
        same = np.argmax(actual, axis=1) == np.argmax(expected, axis=1)
        agreement = float(np.mean(same))
    return Parity(
        max_abs=float(np.max(difference)),
        max_rel=float(np.max(relative)) if relative.size else 0.0,
        atol=float(atol),
        rtol=float(rtol),
        mismatched=int(np.size(close) - np.count_nonzero(close)),
        elements=int(expected.size),
        samples=count,
        top1_agreement=agreement,
    )


@dataclass(frozen=True)
class LatencyComparison:
    """Median latency of the original and the exported model on the same batch."""

    runs: int
    batch_size: int
    #: Median milliseconds per batch of the original model.
    source_ms: float
    #: Median milliseconds per batch of the exported model.
    exported_ms: float
    source_agent: str = ""
    exported_agent: str = ""
    source_device: str = "cpu"
    exported_device: str = "cpu"
    #: The fastest run of each: far below the median, the machine was busy.
    source_min_ms: float | None = None
    exported_min_ms: float | None = None

    #: A median above this many times the fastest run makes the timing :attr:`noisy`.
    NOISY = 3.0

    @property
    def noisy(self) -> bool:
        """True when a median is far above its fastest run (other load on the machine)."""
        return any(
            fastest is not None and fastest > 0 and median > self.NOISY * fastest
            for median, fastest in (
                (self.source_ms, self.source_min_ms),
                (self.exported_ms, self.exported_min_ms),
            )
        )

    @property
    def speedup(self) -> float | None:
        """Original ÷ exported median latency: above 1 means the export is faster."""
        return self.source_ms / self.exported_ms if self.exported_ms > 0 else None

    def describe(self) -> str:
        speedup = self.speedup
        ratio = f" ({speedup:.2f}x)" if speedup is not None else ""
        return (
            f"median of {self.runs} runs at batch {self.batch_size}: {self.source_agent} "
            f"{self.source_ms:.3f} ms, {self.exported_agent} {self.exported_ms:.3f} ms{ratio}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup, "noisy": self.noisy}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyComparison:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


def median_latency(predictor: Any, batch: Any, runs: int, *, warmup: int = 3) -> float:
    """Median milliseconds of ``predictor.predict(batch)`` over ``runs`` runs (after
    ``warmup`` untimed ones), each followed by ``predictor.synchronize()``, inside the
    predictor's ``session()`` when it has one."""
    return time_runs(predictor, batch, runs, warmup=warmup)[0]


def time_runs(predictor: Any, batch: Any, runs: int, *, warmup: int = 3) -> tuple[float, float]:
    """``(median, fastest)`` milliseconds of ``runs`` runs, as :func:`median_latency`."""
    session = getattr(predictor, "session", None)
    context = session() if callable(session) else contextlib.nullcontext()
    predict, sync = predictor.predict, predictor.synchronize
    clock = time.perf_counter_ns
    times = []
    with context:
        for _ in range(warmup):
            predict(batch)
            sync()
        for _ in range(runs):
            start = clock()
            predict(batch)
            sync()
            times.append(clock() - start)
    if not times:
        return 0.0, 0.0
    return statistics.median(times) / 1e6, min(times) / 1e6
