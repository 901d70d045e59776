"""Load scenarios with MLPerf LoadGen's semantics, run in-process (no server needed).

A scenario says how queries reach the model and what is reported:

- ``single_stream``: one query of one sample at a time, the next issued when the
  last completes; the 90th percentile latency, with LoadGen's early-stopping
  estimate.
- ``multi_stream``: the same with queries of N samples; the 99th percentile.
- ``offline``: every sample in one query, run in batches back to back; throughput.
- ``server``: queries of one sample arrive at ``target_qps`` on a seeded Poisson
  schedule; the model takes what has arrived (up to a batch) whenever it is free.
  A query's latency runs from its *scheduled* arrival to its completion, so time
  spent waiting behind slower queries counts. The run is VALID when the 99th
  percentile is within ``latency_bound_ms``; :func:`find_peak` searches the highest
  valid rate.

Like LoadGen, samples are loaded (read and preprocessed) before the timed run and
queries draw them at random (seeded) from that set, repeating it as often as the
minimum duration and query count need. A run that did not meet the minimums (cut
short by ``max_duration``) is INVALID, with the reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError, did_you_mean
from forgeml.eval._stats import LatencyHistogram, LatencyStats

SCENARIOS = ("single_stream", "multi_stream", "offline", "server")

#: LoadGen's minimums (MLPerf Inference rules), for reference in the output.
LOADGEN_DEFAULTS: dict[str, dict[str, Any]] = {
    "single_stream": {"min_duration_s": 600.0, "min_query_count": 1024},
    "multi_stream": {"min_duration_s": 600.0, "min_query_count": 270_336},
    "offline": {"min_duration_s": 600.0, "min_query_count": 1, "min_sample_count": 24_576},
    "server": {"min_duration_s": 600.0, "min_query_count": 270_336},
}
#: forgeml's defaults: LoadGen's scaled down for a run on a workstation. The query
#: counts are those the early-stopping estimate needs at least (about 460 queries for a
#: 99th percentile with no query over it), rounded up.
LOCAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "single_stream": {"min_duration_s": 2.0, "min_query_count": 1024},
    "multi_stream": {"min_duration_s": 2.0, "min_query_count": 662},
    "offline": {"min_duration_s": 2.0, "min_query_count": 1, "min_sample_count": 4096},
    "server": {"min_duration_s": 2.0, "min_query_count": 500},
}
#: The latency percentile each scenario reports (LoadGen's).
TARGET_PERCENTILE = {"single_stream": 90.0, "multi_stream": 99.0, "offline": 99.0, "server": 99.0}
#: Confidence of the early-stopping estimate (LoadGen's).
EARLY_STOPPING_CONFIDENCE = 0.99
#: Samples per query of multi_stream when not given (LoadGen's default).
MULTI_STREAM_SAMPLES = 8

Predict = Callable[[np.ndarray], Any]


@dataclass
class ScenarioSettings:
    """What a scenario run is asked to do (every field has a scenario default)."""

    scenario: str = "single_stream"
    samples_per_query: int = 1
    #: server: the mean arrival rate (queries per second)
    target_qps: float | None = None
    #: server: the bound on the 99th percentile of query latency
    latency_bound_ms: float | None = None
    min_duration_s: float = 2.0
    min_query_count: int = 1024
    #: offline: samples in the one query
    min_sample_count: int = 0
    #: stop issuing queries after this long even when the minimums are not met (INVALID)
    max_duration_s: float = 60.0
    #: server: the largest batch the model takes from the queue
    max_batch_size: int = 1
    #: offline: the batch size queries are run in
    batch_size: int = 64
    seed: int = 0

    @classmethod
    def create(
        cls,
        scenario: str,
        *,
        samples_per_query: int | None = None,
        target_qps: float | None = None,
        latency_bound_ms: float | None = None,
        min_duration: float | None = None,
        min_query_count: int | None = None,
        max_duration: float | None = None,
        batch_size: int = 1,
        seed: int = 0,
    ) -> ScenarioSettings:
        """Settings for ``scenario`` with its defaults, checked; errors say what to pass."""
        if scenario not in SCENARIOS:
            raise EvalError(
                f"Unknown scenario '{scenario}'. Known: {', '.join(SCENARIOS)}."
                f"{did_you_mean(scenario, SCENARIOS)}"
            )
        defaults = LOCAL_DEFAULTS[scenario]
        _check_positive("min_duration", min_duration, allow_zero=True)
        _check_positive("max_duration", max_duration)
        _check_positive("min_query_count", min_query_count)
        _check_positive("samples_per_query", samples_per_query)
        _check_positive("batch_size", batch_size)
        if scenario == "server":
            if target_qps is None or latency_bound_ms is None:
                raise EvalError(
                    "The server scenario needs a target rate and a latency bound: pass "
                    "--target_qps (queries per second) and --latency_bound_ms (the bound on the "
                    "99th percentile), e.g. --target_qps 200 --latency_bound_ms 10."
                )
            _check_positive("target_qps", target_qps)
            _check_positive("latency_bound_ms", latency_bound_ms)
        elif target_qps is not None or latency_bound_ms is not None:
            raise EvalError(
                f"--target_qps and --latency_bound_ms apply to the server scenario only, not to "
                f"'{scenario}'. Drop them, or use --scenario server."
            )
        if samples_per_query is not None and scenario != "multi_stream":
            raise EvalError(
                f"--samples_per_query applies to the multi_stream scenario only, not to "
                f"'{scenario}' (single_stream and server queries have one sample; offline has "
                f"one query of every sample)."
            )
        per_query = {"multi_stream": samples_per_query or MULTI_STREAM_SAMPLES}.get(scenario, 1)
        min_duration_s = float(defaults["min_duration_s"] if min_duration is None else min_duration)
        max_duration_s = float(max_duration if max_duration is not None else 60.0)
        if max_duration_s < min_duration_s:
            raise EvalError(
                f"The scenario's max_duration ({max_duration_s:g} s) is below its min_duration "
                f"({min_duration_s:g} s): no run could be VALID. Raise --max_duration, or lower "
                f"--min_duration."
            )
        return cls(
            scenario=scenario,
            samples_per_query=per_query,
            target_qps=float(target_qps) if target_qps is not None else None,
            latency_bound_ms=float(latency_bound_ms) if latency_bound_ms is not None else None,
            min_duration_s=min_duration_s,
            min_query_count=int(
                defaults["min_query_count"] if min_query_count is None else min_query_count
            ),
            min_sample_count=int(defaults.get("min_sample_count", 0)),
            max_duration_s=max_duration_s,
            max_batch_size=batch_size if scenario == "server" else 1,
            batch_size=batch_size,
            seed=seed,
        )


def _check_positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise EvalError(f"The '{name}' option of a scenario must be {kind} number. Got {value!r}.")


@dataclass
class ScenarioResult:
    """What LoadGen would report for one run."""

    scenario: str
    valid: bool
    #: why the run is INVALID (empty when VALID)
    reasons: list[str]
    queries: int
    samples: int
    duration_s: float
    #: completed queries per second over the run
    qps: float
    #: samples per second over the run
    throughput: float
    #: per-query latency, in milliseconds
    latency: LatencyStats
    #: the percentile the scenario reports (90 or 99) and its value in ms
    percentile: float
    percentile_ms: float
    #: LoadGen's early-stopping estimate of that percentile (None: too few queries)
    early_stopping_ms: float | None
    settings: dict[str, Any]
    #: server only: the scheduled rate, and what the search tried (find_peak)
    target_qps: float | None = None
    peak_search: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def headline(self) -> tuple[str, float]:
        """The figure the scenario is judged by: (name, value)."""
        if self.scenario == "offline":
            return "samples/s", self.throughput
        if self.scenario == "server":
            return "qps", self.target_qps or self.qps
        return f"p{self.percentile:g} ms", self.percentile_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_dict()
        data["status"] = self.status
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["latency"] = LatencyStats.from_dict(dict(data["latency"]))
        return cls(**fields)

    def lines(self) -> list[str]:
        """The report as text lines (what ``forgeml eval --scenario`` prints)."""
        name, value = self.headline
        out = [
            f"scenario {self.scenario}: {self.status}"
            + (f" ({'; '.join(self.reasons)})" if self.reasons else ""),
            f"  {name}: {value:,.3f}" if name != "samples/s" else f"  {name}: {value:,.1f}",
            f"  queries {self.queries} ({self.samples} samples) in {self.duration_s:.2f} s: "
            f"{self.qps:,.1f} queries/s, {self.throughput:,.1f} samples/s",
            f"  latency ms: p50 {self.latency.p50:.3f}, p90 {self.latency.p90:.3f}, "
            f"p99 {self.latency.p99:.3f}, max {self.latency.max:.3f}",
        ]
        if self.scenario != "offline":
            estimate = (
                f"{self.early_stopping_ms:.3f} ms"
                if self.early_stopping_ms is not None
                else "not available (too few queries)"
            )
            out.append(f"  early-stopping p{self.percentile:g} estimate: {estimate}")
        if self.scenario == "server":
            out.append(
                f"  target {self.target_qps:g} queries/s, bound "
                f"{self.settings['latency_bound_ms']:g} ms on p99"
            )
        for tried in self.peak_search:
            out.append(
                f"  peak search: {tried['target_qps']:,.1f} queries/s -> "
                f"p99 {tried['p99_ms']:.3f} ms, {'VALID' if tried['valid'] else 'INVALID'}"
            )
        out.extend(f"  note: {note}" for note in self.notes)
        return out


# ----------------------------------------------------------------------------- statistics


def early_stopping_index(n: int, percentile: float, confidence: float) -> int | None:
    """The 1-based rank ``k`` of the smallest order statistic that bounds the
    ``percentile`` from above with ``confidence``: the least ``k`` with
    P(Binomial(n, p) <= k - 1) >= confidence. None when even the largest of ``n``
    observations is not enough (more queries are needed)."""
    p = percentile / 100.0
    if n <= 0 or not 0.0 < p < 1.0:
        return None
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n_fact = math.lgamma(n + 1)
    cdf = 0.0
    for j in range(n):
        log_pmf = log_n_fact - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p
        log_pmf += (n - j) * log_q
        cdf += math.exp(log_pmf)
        if cdf >= confidence:
            return j + 1
    return None


def early_stopping_estimate(
    latencies_ns: np.ndarray, percentile: float, confidence: float = EARLY_STOPPING_CONFIDENCE
) -> float | None:
    """LoadGen's early-stopping estimate (ms): a latency the true ``percentile`` is
    below with ``confidence``, from the observed query latencies."""
    k = early_stopping_index(len(latencies_ns), percentile, confidence)
    if k is None:
        return None
    ordered = np.partition(latencies_ns, k - 1)
    return float(ordered[k - 1]) / 1e6


def _stats(latencies_ns: np.ndarray) -> LatencyStats:
    histogram = LatencyHistogram()
    histogram.record(latencies_ns)
    return histogram.stats()


# ----------------------------------------------------------------------------- running


class QuerySource:
    """Preprocessed samples (loaded before the timed run) and seeded query draws."""

    def __init__(self, samples: np.ndarray, seed: int) -> None:
        if len(samples) == 0:
            raise EvalError("A scenario needs at least one sample; the dataset has none.")
        self.samples = np.ascontiguousarray(samples)
        self.rng = np.random.default_rng(seed)

    def queries(self, count: int, size: int) -> list[np.ndarray]:
        """``count`` query inputs of ``size`` samples each, drawn at random (distinct
        draws are made once and reused, so memory stays small)."""
        pool = min(count, 1024)
        picks = self.rng.integers(0, len(self.samples), size=(pool, size))
        made = [np.ascontiguousarray(self.samples[row]) for row in picks]
        return [made[i % pool] for i in range(count)] if count > pool else made


def _minimums_reasons(
    settings: ScenarioSettings, queries: int, samples: int, duration_s: float
) -> list[str]:
    reasons = []
    if duration_s < settings.min_duration_s:
        reasons.append(
            f"ran {duration_s:.2f} s, less than the minimum duration {settings.min_duration_s:g} s"
        )
    if queries < settings.min_query_count:
        reasons.append(f"{queries} queries, fewer than the minimum {settings.min_query_count}")
    if settings.scenario == "offline" and samples < settings.min_sample_count:
        reasons.append(f"{samples} samples, fewer than the minimum {settings.min_sample_count}")
    return reasons


def _sequential(
    predict: Predict, source: QuerySource, settings: ScenarioSettings, sync: Callable[[], None]
) -> tuple[np.ndarray, int, float]:
    """single_stream and multi_stream: a query, its completion, the next query."""
    clock = time.perf_counter_ns
    batch = 256
    latencies: list[np.ndarray] = []
    buffer = np.empty(batch, dtype=np.int64)
    queries = source.queries(min(settings.min_query_count, 4096), settings.samples_per_query)
    min_ns = int(settings.min_duration_s * 1e9)
    max_ns = int(settings.max_duration_s * 1e9)
    done = filled = 0
    start = clock()
    now = start
    while True:
        t0 = clock()
        predict(queries[done % len(queries)])
        sync()
        now = clock()
        buffer[filled] = now - t0
        filled += 1
        done += 1
        if filled == batch:
            latencies.append(buffer.copy())
            filled = 0
        elapsed = now - start
        if (elapsed >= min_ns and done >= settings.min_query_count) or elapsed >= max_ns:
            break
    latencies.append(buffer[:filled].copy())
    return np.concatenate(latencies), done, (now - start) / 1e9


def _offline(
    predict: Predict, source: QuerySource, settings: ScenarioSettings, sync: Callable[[], None]
) -> tuple[np.ndarray, int, float]:
    """offline: one query of every sample (repeated to the minimum count), in batches."""
    clock = time.perf_counter_ns
    total = max(settings.min_sample_count, len(source.samples))
    batches = source.queries(math.ceil(total / settings.batch_size), settings.batch_size)
    min_ns = int(settings.min_duration_s * 1e9)
    max_ns = int(settings.max_duration_s * 1e9)
    samples = 0
    start = clock()
    now = start
    i = 0
    while True:
        predict(batches[i % len(batches)])
        sync()
        samples += settings.batch_size
        i += 1
        now = clock()
        elapsed = now - start
        if (samples >= total and elapsed >= min_ns) or elapsed >= max_ns:
            break
    # One query: its latency is the whole run.
    return np.array([now - start], dtype=np.int64), samples, (now - start) / 1e9


def poisson_schedule(qps: float, count: int, seed: int) -> np.ndarray:
    """Arrival times (ns from the start) of ``count`` queries at mean rate ``qps``."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1e9 / qps, size=count)
    return np.cumsum(gaps).astype(np.int64)


def server_schedule(settings: ScenarioSettings) -> np.ndarray:
    """The server scenario's arrivals: enough queries for the minimum count, and for the
    last one to arrive at or after the minimum duration (as LoadGen schedules them)."""
    assert settings.target_qps is not None
    min_ns = settings.min_duration_s * 1e9
    count = max(settings.min_query_count, math.ceil(settings.min_duration_s * settings.target_qps))
    while True:
        arrivals = poisson_schedule(settings.target_qps, count, settings.seed)
        if arrivals[-1] >= min_ns:
            enough = int(np.searchsorted(arrivals, min_ns, side="left")) + 1
            return arrivals[: max(settings.min_query_count, enough)]
        count = count * 2


def _server(
    predict: Predict, source: QuerySource, settings: ScenarioSettings, sync: Callable[[], None]
) -> tuple[np.ndarray, int, float]:
    """server: Poisson arrivals; the model takes every arrived query (up to a batch)."""
    assert settings.target_qps is not None
    clock = time.perf_counter_ns
    arrivals = server_schedule(settings)
    count = len(arrivals)
    samples = source.samples
    picks = source.rng.integers(0, len(samples), size=count)
    max_ns = int(settings.max_duration_s * 1e9)
    latencies = np.empty(count, dtype=np.int64)
    limit = settings.max_batch_size
    done = 0
    start = clock()
    now = start
    while done < count:
        now = clock() - start
        if now >= max_ns:
            break
        due = int(arrivals[done])
        if now < due:  # idle until the next arrival: sleep, then spin the last stretch
            wait = due - now
            if wait > 200_000:
                time.sleep((wait - 150_000) / 1e9)
            while clock() - start < due:
                pass
            now = clock() - start
        ready = int(np.searchsorted(arrivals, now, side="right"))
        stop = min(max(ready, done + 1), done + limit, count)
        predict(samples[picks[done:stop]])
        sync()
        finished = clock() - start
        latencies[done:stop] = finished - arrivals[done:stop]
        done = stop
        now = finished
    return latencies[:done], done, now / 1e9


_RUNNERS = {
    "single_stream": _sequential,
    "multi_stream": _sequential,
    "offline": _offline,
    "server": _server,
}


def run_scenario(
    predict: Predict,
    samples: np.ndarray,
    settings: ScenarioSettings,
    *,
    sync: Callable[[], None] | None = None,
) -> ScenarioResult:
    """Run one scenario over ``samples`` (preprocessed model inputs, one per row) with
    ``predict`` (one call per query or batch); returns what LoadGen would report."""
    source = QuerySource(samples, settings.seed)
    run = _RUNNERS[settings.scenario]
    latencies_ns, done, duration_s = run(predict, source, settings, sync or _nothing)
    if settings.scenario == "offline":
        queries, total_samples = 1, done
    else:
        queries, total_samples = len(latencies_ns), len(latencies_ns) * settings.samples_per_query
    percentile = TARGET_PERCENTILE[settings.scenario]
    stats = _stats(latencies_ns) if len(latencies_ns) else LatencyStats.empty()
    percentile_ms = float(np.percentile(latencies_ns, percentile)) / 1e6 if queries else 0.0
    estimate = (
        early_stopping_estimate(latencies_ns, percentile)
        if settings.scenario != "offline"
        else None
    )
    reasons = _minimums_reasons(settings, queries, total_samples, duration_s)
    if settings.scenario == "server":
        assert settings.latency_bound_ms is not None
        if percentile_ms > settings.latency_bound_ms:
            reasons.append(
                f"p99 latency {percentile_ms:.3f} ms is over the bound "
                f"{settings.latency_bound_ms:g} ms at {settings.target_qps:g} queries/s"
            )
    defaults = LOADGEN_DEFAULTS[settings.scenario]
    notes = []
    if settings.scenario != "offline" and estimate is None:
        notes.append(
            f"{queries} queries are too few for an early-stopping p{percentile:g} estimate "
            f"(it needs at least {_queries_needed(percentile)})"
        )
    notes += [
        f"minimums scaled down for a local run: {settings.min_duration_s:g} s and "
        f"{settings.min_query_count} queries"
        + (f" ({settings.min_sample_count} samples)" if settings.scenario == "offline" else "")
        + f" (LoadGen: {defaults['min_duration_s']:g} s and {defaults['min_query_count']} "
        f"queries"
        + (f", {defaults['min_sample_count']} samples)" if "min_sample_count" in defaults else ")")
    ]
    return ScenarioResult(
        scenario=settings.scenario,
        valid=not reasons,
        reasons=reasons,
        queries=queries,
        samples=total_samples,
        duration_s=duration_s,
        qps=queries / duration_s if duration_s > 0 else 0.0,
        throughput=total_samples / duration_s if duration_s > 0 else 0.0,
        latency=stats,
        percentile=percentile,
        percentile_ms=percentile_ms,
        early_stopping_ms=estimate,
        settings=asdict(settings),
        target_qps=settings.target_qps,
        notes=notes,
    )


def _queries_needed(percentile: float) -> int:
    n = 1
    while early_stopping_index(n, percentile, EARLY_STOPPING_CONFIDENCE) is None:
        n = n * 2 if n < 64 else n + max(1, n // 16)
    return n


def _nothing() -> None:
    return None


def find_peak(
    predict: Predict,
    samples: np.ndarray,
    settings: ScenarioSettings,
    *,
    sync: Callable[[], None] | None = None,
    tolerance: float = 0.05,
    max_runs: int = 12,
) -> ScenarioResult:
    """The highest ``target_qps`` whose server run is VALID (LoadGen's peak search):
    from ``settings.target_qps``, double while VALID, then bisect between the highest
    VALID and the lowest INVALID rate until they are within ``tolerance``. Returns the
    best VALID run (or the lowest INVALID one when none is VALID), with every rate
    tried in ``peak_search``."""
    if settings.scenario != "server":
        raise EvalError(
            f"--find_peak searches the server scenario's rate; got scenario '{settings.scenario}'."
            f" Use --scenario server."
        )
    assert settings.target_qps is not None
    tried: list[dict[str, Any]] = []
    best_valid: ScenarioResult | None = None
    lowest_invalid: ScenarioResult | None = None
    low, high = 0.0, math.inf
    qps = settings.target_qps
    for _ in range(max_runs):
        run = run_scenario(predict, samples, _with_qps(settings, qps), sync=sync)
        tried.append(
            {"target_qps": qps, "p99_ms": run.percentile_ms, "valid": run.valid, "qps": run.qps}
        )
        if run.valid:
            low, best_valid = qps, run
        else:
            high, lowest_invalid = qps, run
        if high < math.inf and low > 0 and (high - low) <= tolerance * low:
            break
        if low == 0 and qps <= settings.target_qps / 16:
            break  # sixteen times below the start and still INVALID: stop searching down
        qps = qps * 2 if high == math.inf else (low + high) / 2 if low > 0 else qps / 2
    chosen = best_valid or lowest_invalid
    assert chosen is not None
    chosen.peak_search = tried
    if best_valid is None:
        chosen.reasons.append(f"no rate tried was VALID (lowest {tried[-1]['target_qps']:g}/s)")
    elif lowest_invalid is None:
        chosen.notes.append(
            f"every rate tried was VALID, up to {low:g} queries/s: the peak is higher (start "
            f"from a higher --target_qps, or raise max_runs)"
        )
    return chosen


def _with_qps(settings: ScenarioSettings, qps: float) -> ScenarioSettings:
    changed = ScenarioSettings(**asdict(settings))
    changed.target_qps = qps
    return changed


def scenario_samples(batches: Sequence[np.ndarray]) -> np.ndarray:
    """Preprocessed batches joined into one array of samples (LoadGen's loaded set)."""
    if not batches:
        raise EvalError("A scenario needs at least one sample; the dataset has none.")
    return np.concatenate(batches)
