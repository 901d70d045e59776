"""The runner: :func:`evaluate` times a model batch by batch and scores it.

For every batch the runner times three phases with ``time.perf_counter_ns``:
the task's preprocessing, the agent's prediction (followed by a device
synchronisation on a GPU, so the time is the model's and not the launch's),
and the task's postprocessing. Warmup batches run first and are not counted.
Latencies go into fixed-size histograms (:mod:`forgeml.eval._stats`), so
memory does not grow with the number of batches, and the loop does no
per-batch logging or allocation of its own.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError
from forgeml.eval._manifest import Manifest, canonical_framework, get_manifest, load_manifest
from forgeml.eval._protocols import Agent, Batch, EvalData, Predictor, Task
from forgeml.eval._scenarios import ScenarioResult, ScenarioSettings, find_peak, run_scenario
from forgeml.eval._stats import LatencyRecorder, LatencyStats

#: The timed phases of a batch; ``total`` is their sum.
PHASES = ("preprocess", "predict", "postprocess", "total")
#: Above this run-to-run spread (IQR ÷ median of predict latency) the result carries a warning.
SPREAD_LIMIT = 0.10
#: Fewer timed batches than this say too little about the spread to warn.
SPREAD_MIN_BATCHES = 5
#: How many top classes ``save_output`` keeps per sample.
TOP_K = 5
OUTPUT_SUFFIXES = (".csv", ".json", ".npz")

#: ``progress=``: None (a bar when stderr is a terminal), a bool, or ``fn(done, total)``.
ProgressArg = bool | Callable[[int, int], None] | None


@dataclass
class EvalResult:
    """One evaluation: what ran, on what data, how fast, how well, and on which machine.

    Latencies are per batch, in milliseconds, for each phase in :data:`PHASES`;
    ``throughput`` is samples per second over the whole timed loop (reading
    batches and updating metrics included).
    """

    model: str
    framework: str
    agent: str
    task: str
    dataset: str
    batch_size: int
    num_samples: int
    num_batches: int
    latency: dict[str, LatencyStats]
    throughput: float
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    model_version: str = "1"
    device: str = "cpu"
    num_warmup: int = 0
    duration_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    output_file: str | None = None
    tracking_run_id: str | None = None
    #: the load scenario's report (``forgeml.eval.ScenarioResult``), when one ran
    scenario: ScenarioResult | None = None
    #: the trace of a traced evaluation (``trace_level``): level, file, spans, overhead per level
    trace: dict[str, Any] | None = None
    created: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
    )
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def spread(self) -> float | None:
        """Run-to-run spread of the predict latency: IQR ÷ median."""
        stats = self.latency.get("predict")
        return stats.spread if stats is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "model_version": self.model_version,
            "framework": self.framework,
            "agent": self.agent,
            "task": self.task,
            "dataset": self.dataset,
            "batch_size": self.batch_size,
            "device": self.device,
            "num_samples": self.num_samples,
            "num_batches": self.num_batches,
            "num_warmup": self.num_warmup,
            "duration_s": self.duration_s,
            "throughput": self.throughput,
            "spread": self.spread,
            "latency_ms": {phase: stats.to_dict() for phase, stats in self.latency.items()},
            "metrics": _plain(self.metrics),
            "warnings": list(self.warnings),
            "problems": list(self.problems),
            "output_file": self.output_file,
            "tracking_run_id": self.tracking_run_id,
            "scenario": self.scenario.to_dict() if self.scenario is not None else None,
            "trace": _plain(self.trace) if self.trace is not None else None,
            "provenance": _plain(self.provenance),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        return cls(
            id=str(data["id"]),
            created=str(data["created"]),
            model=str(data["model"]),
            model_version=str(data.get("model_version", "1")),
            framework=str(data["framework"]),
            agent=str(data["agent"]),
            task=str(data["task"]),
            dataset=str(data["dataset"]),
            batch_size=int(data["batch_size"]),
            device=str(data.get("device", "cpu")),
            num_samples=int(data["num_samples"]),
            num_batches=int(data["num_batches"]),
            num_warmup=int(data.get("num_warmup", 0)),
            duration_s=float(data.get("duration_s", 0.0)),
            throughput=float(data["throughput"]),
            latency={
                phase: LatencyStats.from_dict(stats)
                for phase, stats in dict(data.get("latency_ms", {})).items()
            },
            metrics=dict(data.get("metrics", {})),
            warnings=list(data.get("warnings", [])),
            problems=list(data.get("problems", [])),
            output_file=data.get("output_file"),
            tracking_run_id=data.get("tracking_run_id"),
            scenario=(
                ScenarioResult.from_dict(dict(data["scenario"])) if data.get("scenario") else None
            ),
            provenance=dict(data.get("provenance", {})),
            trace=dict(data["trace"]) if data.get("trace") else None,
        )

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        return cls.from_dict(json.loads(text))

    def scalar_metrics(self) -> dict[str, float]:
        """The metrics that are single numbers (tables such as a confusion matrix left out)."""
        return {
            name: float(value)
            for name, value in self.metrics.items()
            if isinstance(value, int | float | np.number) and not isinstance(value, bool)
        }

    def renderable(self) -> Any:
        """A rich renderable: the header, the latency table and the headline figures."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        versions = self.provenance.get("versions", {})
        library = next(
            (f"{k} {v}" for k, v in versions.items() if k not in ("python", "forgeml", "numpy")),
            self.framework,
        )
        header = Text.assemble(
            (f"{self.model}", "bold"),
            f" · {self.agent} ({library}) · {self.task} · {self.dataset}"
            f" · batch {self.batch_size} · {self.device}",
        )
        counted = Text(
            f"{self.num_samples} samples in {self.num_batches} batches"
            + (
                f" ({self.num_warmup} warmup batch{'es' if self.num_warmup > 1 else ''} "
                f"not counted)"
                if self.num_warmup
                else ""
            )
        )
        table = Table(box=None, padding=(0, 1), pad_edge=False)
        table.add_column("latency (ms)")
        for column in ("min", "mean", "p50", "p90", "p95", "p99", "max"):
            table.add_column(column, justify="right")
        for phase in PHASES:
            stats = self.latency.get(phase)
            if stats is None:
                continue
            table.add_row(
                phase,
                *(
                    _ms(getattr(stats, c))
                    for c in ("min", "mean", "p50", "p90", "p95", "p99", "max")
                ),
            )
        figures = Table(box=None, padding=(0, 1), pad_edge=False, show_header=False)
        figures.add_column(style="bold")
        figures.add_column()
        figures.add_row("throughput", f"{self.throughput:,.1f} samples/s")
        spread = self.spread
        if spread is not None:
            figures.add_row("spread", f"{spread:.1%} (IQR/median of predict latency)")
        for name, value in self.scalar_metrics().items():
            figures.add_row(name, f"{value:.4f}".rstrip("0").rstrip(".") if value else "0")
        tables = [name for name, value in self.metrics.items() if isinstance(value, list)]
        if tables:
            figures.add_row("tables", f"{', '.join(tables)} (see --json)")
        parts: list[Any] = [header, counted, Text(""), table, Text(""), figures]
        if self.scenario is not None:
            parts.append(Text(""))
            style = "bold green" if self.scenario.valid else "bold red"
            lines = self.scenario.lines()
            parts.append(Text(lines[0], style=style))
            parts.extend(Text(line) for line in lines[1:])
        if self.trace:
            from forgeml.trace._eval import trace_parts

            parts.extend(trace_parts(self.trace))
        for warning in self.warnings:
            parts.append(Text(f"warning: {warning}", style="yellow"))
        return Group(*parts)

    def summary(self, width: int = 100) -> str:
        """The summary as plain text (what ``forgeml eval`` prints)."""
        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.renderable())
        return console.export_text()

    def __rich__(self) -> Any:
        return self.renderable()


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays become numbers and lists; NaN stays float."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- options


def _positive(name: str, value: Any, *, allow_none: bool = False, zero: bool = False) -> Any:
    if value is None and allow_none:
        return None
    least = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        kind = "a non-negative integer" if zero else "a positive integer"
        raise EvalError(f"The '{name}' option of eval must be {kind}. Got {value!r}.")
    return int(value)


def parse_architecture(architecture: str) -> str:
    """``"cpu"`` -> ``"cpu"``; ``"gpu"``/``"cuda"`` -> ``"cuda:0"``; ``"cuda:N"`` kept
    (parsed by :func:`~forgeml.eval.agents.normalize_device`).

    A GPU device must exist: at least N+1 NVIDIA GPUs must be visible to this process.
    """
    from forgeml._core._env import nvidia_gpu_count
    from forgeml.eval.agents._base import device_index, normalize_device

    try:
        device = normalize_device(architecture)
    except EvalError:
        raise EvalError(
            f"The 'architecture' option of eval must be cpu, gpu or cuda:N. Got {architecture!r}."
        ) from None
    index = device_index(device)
    if index is None:
        return device
    count = nvidia_gpu_count()
    if index >= count:
        seen = f"{count} NVIDIA GPU(s) are visible" if count else "no NVIDIA GPU is visible"
        raise EvalError(
            f"Architecture {architecture!r} needs GPU {index}, but {seen} here "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
            f"Use --architecture cpu, or a GPU index below {count}."
            if count
            else f"Architecture {architecture!r} needs an NVIDIA GPU, but {seen} here. "
            f"Use --architecture cpu."
        )
    return device


def resolve_agent(agent: str | Agent) -> Agent:
    """An agent object from a registry name (or alias), or the agent itself."""
    if not isinstance(agent, str):
        return agent
    from forgeml.eval.agents import get_agent

    return get_agent(agent)


def resolve_task(task: str | Task) -> Task:
    """A task object from a registry name, or the task itself."""
    if not isinstance(task, str):
        return task
    from forgeml.eval.tasks import get_task

    return get_task(task)


def resolve_manifest(model: str | os.PathLike[str] | Manifest, framework: str | None) -> Manifest:
    """A manifest: given, read from a ``.yml`` path, or looked up by name (and framework)."""
    if isinstance(model, Manifest):
        return model
    text = os.fspath(model)
    if text.endswith((".yml", ".yaml")) and Path(text).expanduser().is_file():
        return load_manifest(text, frameworks=[framework] if framework else ())
    return get_manifest(text, framework)


def default_dataset(manifest: Manifest) -> str:
    """The held-out part of the bundled dataset the model was trained on."""
    from forgeml.eval._bundled import is_bundled

    trained_on = manifest.attributes.get("training_dataset")
    if isinstance(trained_on, str) and is_bundled(trained_on):
        return trained_on.partition(":")[0]
    raise EvalError(
        f"No dataset given for model '{manifest.name}', and its manifest names no bundled "
        f"training dataset. Give dataset= (--dataset_name NAME or --dataset_path DIR)."
    )


# ----------------------------------------------------------------------------- outputs


class _OutputSink:
    """Predictions per sample, for ``save_output``: ids, prediction, target, top-k."""

    def __init__(self, path: Path, labels: tuple[str, ...] | None) -> None:
        self.path = path
        self.labels = labels
        self.ids: list[str] = []
        self.predicted: list[np.ndarray[Any, Any]] = []
        self.targets: list[np.ndarray[Any, Any]] = []
        self.top_classes: list[np.ndarray[Any, Any]] = []
        self.top_scores: list[np.ndarray[Any, Any]] = []

    def add(self, batch: Batch, predictions: Any, outputs: Any) -> None:
        self.ids.extend(str(i) for i in batch.ids)
        self.predicted.append(np.asarray(predictions).reshape(len(batch.ids), -1)[:, 0])
        if batch.labels is not None:
            self.targets.append(np.asarray(batch.labels).reshape(len(batch.ids), -1)[:, 0])
        scores = np.asarray(outputs)
        if scores.ndim == 2 and scores.shape[1] > 1:
            k = min(TOP_K, scores.shape[1])
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            self.top_classes.append(top)
            self.top_scores.append(np.take_along_axis(scores, top, axis=1))

    def write(self) -> None:
        from forgeml._core._files import atomic_open

        predicted = np.concatenate(self.predicted) if self.predicted else np.zeros(0)
        n = len(self.ids)
        targets = np.concatenate(self.targets) if len(self.targets) else None
        if targets is not None and len(targets) != n:
            targets = None
        classes = np.concatenate(self.top_classes) if self.top_classes else None
        scores = np.concatenate(self.top_scores) if self.top_scores else None
        suffix = self.path.suffix.lower()
        if suffix == ".npz":
            arrays: dict[str, Any] = {
                "ids": np.asarray(self.ids, dtype=str),
                "predicted": predicted,
            }
            if targets is not None:
                arrays["target"] = targets
            if classes is not None and scores is not None:
                arrays["top_classes"] = classes
                arrays["top_scores"] = scores
            with atomic_open(self.path, binary=True) as f:
                np.savez(f, **arrays)
            return
        records = []
        for row in range(n):
            record: dict[str, Any] = {"id": self.ids[row], "predicted": predicted[row].item()}
            if self.labels is not None and classes is not None:
                record["predicted_label"] = self._label(predicted[row])
            if targets is not None:
                record["target"] = targets[row].item()
            if classes is not None and scores is not None:
                record["top"] = [
                    {
                        "class": int(c),
                        **({"label": self._label(c)} if self.labels else {}),
                        "score": float(s),
                    }
                    for c, s in zip(classes[row], scores[row], strict=True)
                ]
            records.append(record)
        if suffix == ".json":
            with atomic_open(self.path) as f:
                json.dump(records, f, indent=1)
                f.write("\n")
            return
        import csv

        k = classes.shape[1] if classes is not None else 0
        columns = ["id", "predicted"]
        if self.labels is not None and classes is not None:
            columns.append("predicted_label")
        if targets is not None:
            columns.append("target")
        for rank in range(1, k + 1):
            columns += [f"class_{rank}", f"score_{rank}"]
        with atomic_open(self.path) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            for record in records:
                row_values = [record[c] for c in columns if not c.startswith(("class_", "score_"))]
                for top in record.get("top", []):
                    row_values += [top["class"], f"{top['score']:.6g}"]
                writer.writerow(row_values)

    def _label(self, index: Any) -> str | None:
        if self.labels is None:
            return None
        i = int(index)
        return self.labels[i] if 0 <= i < len(self.labels) else None


# ----------------------------------------------------------------------------- metrics


class _ChunkedMetrics:
    """Feeds a task's :class:`Metrics` several batches at a time.

    A metrics update costs tens of microseconds however small the batch (numpy
    calls), as much as a small model's prediction at batch size 1. Metrics
    accumulate, so updating once with the samples of many batches gives the same
    result; the runner keeps up to :attr:`max_samples` samples (or
    :attr:`max_bytes` of outputs, or :attr:`max_batches` batches) and then updates
    once. Memory stays bounded. Outputs are copied when kept (150 ns for a small
    batch), as a predictor may reuse its output buffer. Batches whose arrays cannot
    be joined (ragged shapes) are fed one by one.
    """

    max_samples = 4096
    max_batches = 1024
    max_bytes = 8 << 20

    def __init__(self, update: Callable[[Any, Any, Any], None]) -> None:
        self.update = update
        self.predictions: list[Any] = []
        self.outputs: list[Any] = []
        self.labels: list[Any] = []
        self.samples = 0
        self.bytes = 0

    def add(self, predictions: Any, outputs: Any, labels: Any) -> None:
        kept = outputs.copy() if isinstance(outputs, np.ndarray) else np.array(outputs)
        self.predictions.append(predictions)
        self.outputs.append(kept)
        self.labels.append(labels)
        self.samples += len(labels)
        self.bytes += kept.nbytes
        if (
            self.samples >= self.max_samples
            or self.bytes >= self.max_bytes
            or len(self.labels) >= self.max_batches
        ):
            self.flush()

    def flush(self) -> None:
        if not self.labels:
            return
        predictions, outputs, labels = self.predictions, self.outputs, self.labels
        self.predictions, self.outputs, self.labels = [], [], []
        self.samples = self.bytes = 0
        if len(labels) == 1:
            self.update(predictions[0], outputs[0], labels[0])
            return
        try:
            joined = (np.concatenate(predictions), np.concatenate(outputs), np.concatenate(labels))
        except ValueError:
            for batch in zip(predictions, outputs, labels, strict=True):
                self.update(*batch)
            return
        self.update(*joined)


# ----------------------------------------------------------------------------- progress


class _Progress:
    """Batches done: a rich bar on stderr, a callback, or nothing."""

    def __init__(self, spec: ProgressArg, total: int, label: str) -> None:
        self.callback: Callable[[int, int], None] | None = None
        self.total = total
        self._bar: Any = None
        self._task: Any = None
        if callable(spec):
            self.callback = spec
            return
        if spec is False or (spec is None and not sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            # No refresh thread: it would compete with the timed loop for the GIL. The
            # loop reports about 100 times a run; the bar redraws at most 4 times a second.
            auto_refresh=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)
        self._drawn = 0.0
        self.callback = self._advance

    def _advance(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < 0.25:
            return
        self._drawn = now
        self._bar.update(self._task, completed=done, total=total)
        self._bar.refresh()

    @property
    def stride(self) -> int:
        """Report every this many batches (about 100 updates per run, at most)."""
        return max(1, math.ceil(self.total / 100)) if self.callback is not None else 0

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ----------------------------------------------------------------------------- running


def _session(predictor: Predictor) -> contextlib.AbstractContextManager[Any]:
    """The predictor's optional ``session()``: a context the runner holds open around all
    predict calls (the torch agent's ``torch.inference_mode``, entered once rather than per
    batch). Predictors without one get a no-op context."""
    session = getattr(predictor, "session", None)
    if not callable(session):
        return contextlib.nullcontext()
    context: contextlib.AbstractContextManager[Any] = session()
    return context


def _span(tracing: Any, name: str, **attrs: Any) -> contextlib.AbstractContextManager[Any]:
    """A span of the evaluation's trace (APPLICATION level); a no-op when not tracing."""
    if tracing is None:
        return contextlib.nullcontext()
    context: contextlib.AbstractContextManager[Any] = tracing.span(name, **attrs)
    return context


def _leveled(options: dict[str, Any], level: Any) -> EvalResult:
    """``trace_mode="leveled"``: one evaluation per trace level up to ``level`` (see
    :func:`forgeml.trace._eval.run_leveled`); stored and tracked once, as the untraced run.

    The untraced run is the headline: it alone runs the scenario and writes
    ``save_output``. Only the deepest level's trace goes to ``trace_file`` and over OTLP.
    """
    from forgeml.trace._eval import check_trace_file, otlp_off, run_leveled
    from forgeml.trace._levels import TraceLevel

    # refuse a bad trace file or endpoint before the first run, not after the last
    check_trace_file(options["trace_file"])
    if options["trace_endpoint"] is not None:
        from forgeml.trace._otlp import otlp_settings

        otlp_settings(options["trace_endpoint"])

    def run(each: Any) -> EvalResult:
        deepest = each == level
        kwargs = {
            **options,
            "trace_level": each,
            "trace_mode": "single",
            "trace_file": options["trace_file"] if deepest else None,
            "trace_endpoint": options["trace_endpoint"] if deepest else None,
            "store": False,
            "track": False,
        }
        if each != TraceLevel.NO_TRACE:
            kwargs.update(scenario=None, find_peak=False, save_output=None)
        if deepest:
            return evaluate(**kwargs)
        with otlp_off():
            return evaluate(**kwargs)

    result: EvalResult
    result, record = run_leveled(run, level)
    result.trace = record
    store, track = options["store"], options["track"]
    if track is not False:
        result.tracking_run_id = log_to_tracking(result, track if isinstance(track, str) else None)
    if store is not False:
        from forgeml.eval._results import ResultsDB

        ResultsDB(None if store is True else store).add(result)
    return result


def _run_warmup(
    data: EvalData,
    batch_size: int,
    count: int,
    task: Task,
    manifest: Manifest,
    predictor: Predictor,
    sync: Callable[[], None] | None,
) -> int:
    """Run ``count`` batches end to end, not timed or scored (restarting the data if short);
    returns how many ran."""
    done = 0
    while done < count:
        ran = 0
        for batch in itertools.islice(data.iter_batches(batch_size), count - done):
            outputs = predictor.predict(task.preprocess(batch.raw, manifest))
            if sync is not None:
                sync()
            task.postprocess(outputs, manifest)
            ran += 1
        if ran == 0:
            return done
        done += ran
    return done


def _timed_loop(
    batches: Iterator[Batch],
    *,
    task: Task,
    manifest: Manifest,
    predictor: Predictor,
    sync: Callable[[], None] | None,
    update: Callable[[Any, Any, Any], None] | None,
    finish: Callable[[], None] | None,
    sink: Callable[[Batch, Any, Any], None] | None,
    recorder: LatencyRecorder,
    max_batches: int,
    progress: Callable[[int, int], None] | None,
    stride: int,
    total: int,
) -> tuple[int, int, int]:
    """The hot loop. Returns (batches, samples, elapsed ns). Kept lean on purpose:
    local names only, no per-batch allocation beyond what the task and model do."""
    clock = time.perf_counter_ns
    preprocess = task.preprocess
    postprocess = task.postprocess
    predict = predictor.predict
    pre_buf, pred_buf, post_buf, total_buf = recorder.buffers
    chunk = recorder.chunk
    flush = recorder.flush
    filled = 0
    done = 0
    samples = 0
    next_report = stride if progress is not None else -1
    start = clock()
    for batch in batches:
        t0 = clock()
        inputs = preprocess(batch.raw, manifest)
        t1 = clock()
        outputs = predict(inputs)
        if sync is not None:
            sync()
        t2 = clock()
        predictions = postprocess(outputs, manifest)
        t3 = clock()
        if update is not None:
            update(predictions, outputs, batch.labels)
        if sink is not None:
            sink(batch, predictions, outputs)
        pre_buf[filled] = t1 - t0
        pred_buf[filled] = t2 - t1
        post_buf[filled] = t3 - t2
        total_buf[filled] = t3 - t0
        filled += 1
        samples += len(batch.ids)
        done += 1
        if filled == chunk:
            flush(filled)
            filled = 0
        if done == next_report:
            progress(done, total)  # type: ignore[misc]
            next_report += stride
        if done == max_batches:
            break
    if finish is not None:
        finish()  # the metrics of the last batches: inside the timed loop
    elapsed = clock() - start
    flush(filled)
    if progress is not None and done != next_report - stride:
        progress(done, total)  # the last batches, since the last report
    return done, samples, elapsed


def evaluate(
    model: str | os.PathLike[str] | Manifest,
    *,
    agent: str | Agent | None = None,
    task: str | Task | None = None,
    dataset: Any = None,
    batch_size: int = 64,
    num_warmup: int = 1,
    num_batches: int | None = None,
    architecture: str = "cpu",
    threads: int | None = None,
    save_output: str | os.PathLike[str] | None = None,
    store: bool | str | os.PathLike[str] = True,
    track: bool | str = True,
    progress: ProgressArg = False,
    scenario: str | ScenarioSettings | None = None,
    find_peak: bool = False,
    endpoint: str | None = None,
    trace_level: str | int | None = None,
    trace_mode: str = "single",
    trace_file: str | os.PathLike[str] | None = None,
    trace_endpoint: str | None = None,
) -> EvalResult:
    """Evaluate a model on a dataset: accuracy metrics, latency percentiles and throughput.

    Args:
        model: a model name (looked up among the manifests, for the agent's
            framework), a manifest ``.yml`` path, or a :class:`Manifest`.
        agent: the agent (framework) that runs it: a registry name such as
            ``"pytorch"`` or ``"onnxruntime"``, or an :class:`Agent`. Default:
            the manifest's framework.
        task: a task name or :class:`Task`. Default: the manifest's task.
        dataset: a bundled dataset name (``"digits"``), a path (folder, ``.npz``,
            ``.csv``) or a ``forgeml.data.Dataset``. Default: the held-out part
            of the bundled dataset the model was trained on.
        batch_size: samples per batch.
        num_warmup: batches run first and not counted.
        num_batches: time and score at most this many batches (default: all).
        architecture: ``"cpu"``, ``"gpu"`` or ``"cuda:N"``.
        threads: the framework's thread count (default: the framework's own).
        save_output: write per-sample predictions (ids, prediction, target,
            top-5 classes and scores) to this ``.csv``, ``.json`` or ``.npz``.
        store: record the result in the results database
            (``$FORGEML_HOME/results.db``), or in the database at this path;
            ``False``: do not record.
        track: also log to MLflow when tracking is configured (an active
            ``forgeml.track`` run, or ``MLFLOW_TRACKING_URI``), or to the tracking
            URI given here; ``False``: never (see :func:`log_to_tracking`).
        progress: a progress bar (``True``; ``None``: when stderr is a terminal),
            or ``fn(batches_done, batches_total)``.
        scenario: after the evaluation, a load scenario with MLPerf LoadGen's
            semantics: ``"single_stream"``, ``"multi_stream"``, ``"offline"`` or
            ``"server"`` (its defaults), or :class:`ScenarioSettings`; the report
            is ``result.scenario`` (see :mod:`forgeml.eval._scenarios`).
        find_peak: with the server scenario, search the highest valid rate.
        endpoint: run the model served at this URL (``forgeml serve``, or any
            KServe-v2 server) instead of loading it here: ``http://HOST:PORT``
            or the full ``.../v2/models/NAME/infer`` URL.
        trace_level: trace the evaluation (:mod:`forgeml.trace`) down to this level:
            ``NO_TRACE`` (default), ``APPLICATION``, ``MODEL``, ``FRAMEWORK``,
            ``LIBRARY``, ``HARDWARE`` or ``FULL``; the trace is ``result.trace``.
        trace_mode: ``"single"`` (one traced run), or ``"leveled"``: one run per
            level up to ``trace_level``, each level's latency from its own run; the
            result's latencies are the untraced run's, ``result.trace["levels"]``
            has each level's figures and overhead. Only the untraced run runs the
            ``scenario`` and writes ``save_output``; only the deepest level's trace
            goes to ``trace_file`` and over OTLP.
        trace_file: where the Chrome/Perfetto trace file goes (default
            ``$FORGEML_HOME/traces/<id>.trace.json``).
        trace_endpoint: also send the trace over OTLP to this collector
            (``http://HOST:4318``, ``grpc://HOST:4317``); default: the
            ``OTEL_EXPORTER_OTLP_*`` variables when they name an endpoint.
    """
    options = dict(locals())  # for trace_mode="leveled", which runs evaluate once per level
    batch_size = _positive("batch_size", batch_size)
    num_warmup = _positive("num_warmup", num_warmup, zero=True)
    num_batches = _positive("num_batches", num_batches, allow_none=True)
    threads = _positive("threads", threads, allow_none=True)
    output_path = None
    if save_output is not None:
        output_path = Path(save_output).expanduser()
        if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise EvalError(
                f"The 'save_output' option of eval must end in {', '.join(OUTPUT_SUFFIXES)} "
                f"(the format follows the suffix). Got '{save_output}'."
            )
    device = parse_architecture(architecture)
    tracing: Any = None
    if trace_level is not None or trace_mode != "single":
        from forgeml.trace._eval import EvalTracing, check_mode
        from forgeml.trace._levels import parse_level

        level = parse_level(trace_level)
        if check_mode(trace_mode) == "leveled" and level > 0:
            return _leveled(options, level)
        if level > 0:
            tracing = EvalTracing(level, trace_file=trace_file, endpoint=trace_endpoint)
    settings = (
        ScenarioSettings.create(scenario, batch_size=batch_size)
        if isinstance(scenario, str)
        else scenario
    )
    if find_peak and (settings is None or settings.scenario != "server"):
        raise EvalError(
            "find_peak searches the server scenario's highest valid rate: pass "
            "scenario='server' (--scenario server) with a starting --target_qps."
        )

    the_agent = resolve_agent(agent) if agent is not None else None
    framework = canonical_framework(the_agent.framework) if the_agent is not None else None
    manifest = resolve_manifest(model, framework)
    if the_agent is None:
        from forgeml.eval._registries import AGENTS

        if manifest.framework not in AGENTS:
            raise EvalError(
                f"Model '{manifest.name}' is a {manifest.framework} model and no agent is named "
                f"after that framework. Name the agent (--agent NAME). Known agents: "
                f"{', '.join(AGENTS.names())}."
            )
        the_agent = resolve_agent(manifest.framework)
    elif canonical_framework(the_agent.framework) != manifest.framework:
        raise EvalError(
            f"Agent '{the_agent.name}' runs {the_agent.framework} models, but model "
            f"'{manifest.name}' is a {manifest.framework} model. Use agent '{manifest.framework}'"
            f", or export the model to {the_agent.framework} (forgeml export)."
        )
    the_task = resolve_task(task if task is not None else manifest.task)
    if the_task.output_type != manifest.output.type:
        raise EvalError(
            f"Task '{the_task.name}' scores {the_task.output_type} outputs, but model "
            f"'{manifest.name}' gives {manifest.output.type} outputs. Use a "
            f"{manifest.output.type} task (the manifest's task is '{manifest.task}')."
        )
    reason = the_agent.unavailable() if endpoint is None else None
    if reason:
        raise EvalError(f"Agent '{the_agent.name}' cannot run here: {reason}")

    source = default_dataset(manifest) if dataset is None else dataset
    limit = num_batches * batch_size if num_batches is not None else None
    with _span(tracing, "load_dataset", dataset=str(source)):
        data = the_task.load_dataset(source, manifest, limit=limit)
    if data.size == 0:
        detail = f" Problems: {'; '.join(data.problems[:5])}" if data.problems else ""
        raise EvalError(f"Dataset '{data.name}' has no samples to evaluate.{detail}")

    total_batches = math.ceil(data.size / batch_size)
    if num_batches is not None:
        total_batches = min(total_batches, num_batches)
    metrics = the_task.metrics(manifest) if data.has_labels else None
    sink = _OutputSink(output_path, manifest.output.labels) if output_path is not None else None
    recorder = LatencyRecorder(PHASES)
    chunked = _ChunkedMetrics(metrics.update) if metrics is not None else None

    predictor: Predictor
    if endpoint is not None:
        from forgeml.eval._remote import HTTPPredictor

        predictor = HTTPPredictor(endpoint, manifest.name)
    else:
        with _span(tracing, "load_model", model=manifest.name, agent=the_agent.name):
            predictor = the_agent.load(manifest, device=device, threads=threads)
    scenario_result: ScenarioResult | None = None
    try:
        sync = predictor.synchronize if device != "cpu" else None
        with _session(predictor):
            with _span(tracing, "warmup", batches=num_warmup):
                _run_warmup(data, batch_size, num_warmup, the_task, manifest, predictor, sync)
            loop: Callable[..., tuple[int, int, int]] = _timed_loop
            traced: dict[str, Any] = {}
            if tracing is not None:
                loop = tracing.loop

                def warm_again(limit: int) -> int:  # for a session a layer tracer swaps in
                    count = min(limit, num_warmup)
                    return _run_warmup(data, batch_size, count, the_task, manifest, predictor, sync)

                traced["warmup"] = warm_again
            bar = _Progress(progress, total_batches, f"{manifest.name} ({the_agent.name})")
            try:
                done, samples, elapsed_ns = loop(
                    data.iter_batches(batch_size),
                    task=the_task,
                    manifest=manifest,
                    predictor=predictor,
                    sync=sync,
                    update=chunked.add if chunked is not None else None,
                    finish=chunked.flush if chunked is not None else None,
                    sink=sink.add if sink is not None else None,
                    recorder=recorder,
                    max_batches=num_batches if num_batches is not None else -1,
                    progress=bar.callback,
                    stride=bar.stride,
                    total=total_batches,
                    **traced,
                )
            finally:
                bar.close()
            if settings is not None:
                scenario_result = _run_scenario(
                    data, the_task, manifest, predictor, settings, sync, find_peak
                )
        info = dict(getattr(predictor, "info", {}) or {})
    finally:
        predictor.close()

    from forgeml.eval._provenance import collect_provenance

    duration_s = elapsed_ns / 1e9
    result = EvalResult(
        model=manifest.name,
        model_version=manifest.version,
        framework=manifest.framework,
        agent=the_agent.name,
        task=the_task.name,
        dataset=data.name,
        batch_size=batch_size,
        device=device,
        num_samples=samples,
        num_batches=done,
        num_warmup=num_warmup,
        duration_s=duration_s,
        latency=recorder.stats(),
        throughput=samples / duration_s if duration_s > 0 else 0.0,
        metrics=_plain(metrics.result()) if metrics is not None and done else {},
        provenance=collect_provenance(
            framework=manifest.framework, device=device, threads=threads, predictor_info=info
        ),
        problems=list(data.problems),
        scenario=scenario_result,
    )
    result.warnings.extend(_warnings(result, data))
    if tracing is not None:
        result.trace = tracing.finish(result)
        result.warnings.extend(tracing.warnings)
    if sink is not None:
        sink.write()
        result.output_file = str(sink.path)
    if track is not False:
        result.tracking_run_id = log_to_tracking(result, track if isinstance(track, str) else None)
    if store is not False:
        from forgeml.eval._results import ResultsDB

        ResultsDB(None if store is True else store).add(result)
    return result


#: The most samples a scenario loads (preprocessed, before its timed run).
SCENARIO_SAMPLES = 4096


def _run_scenario(
    data: EvalData,
    task: Task,
    manifest: Manifest,
    predictor: Predictor,
    settings: ScenarioSettings,
    sync: Callable[[], None] | None,
    peak: bool,
) -> ScenarioResult:
    """LoadGen's sequence: load (read and preprocess) the samples, then the timed run."""
    loaded: list[np.ndarray] = []
    count = 0
    for batch in data.iter_batches(256):
        loaded.append(np.asarray(task.preprocess(batch.raw, manifest)))
        count += len(batch)
        if count >= SCENARIO_SAMPLES:
            break
    from forgeml.eval._scenarios import scenario_samples

    samples = scenario_samples(loaded)
    if peak:
        return find_peak(predictor.predict, samples, settings, sync=sync)
    return run_scenario(predictor.predict, samples, settings, sync=sync)


def _warnings(result: EvalResult, data: EvalData) -> list[str]:
    found = []
    spread = result.spread
    if spread is not None and spread > SPREAD_LIMIT and result.num_batches >= SPREAD_MIN_BATCHES:
        found.append(
            f"Run-to-run spread of predict latency is {spread:.0%} (IQR/median over "
            f"{result.num_batches} batches), above {SPREAD_LIMIT:.0%}: the timings are noisy. "
            f"Close other programs, set --threads, or run more batches."
        )
    if data.problems:
        found.append(
            f"{len(data.problems)} sample(s) of '{data.name}' could not be read and were "
            f"skipped (listed under 'problems')."
        )
    if not data.has_labels:
        found.append(f"Dataset '{data.name}' has no labels: no accuracy metrics.")
    return found


# ----------------------------------------------------------------------------- tracking


def log_to_tracking(result: EvalResult, uri: str | None = None) -> str | None:
    """Log ``result`` to MLflow through ``forgeml.track`` when tracking is configured;
    returns the run id, or None when it is not.

    Configured means: a tracked run is active in this process (``@track.experiment``,
    ``track.start_run``), ``uri`` is given, or ``MLFLOW_TRACKING_URI`` is set. Inside an
    active run the evaluation's figures are logged into it, prefixed
    ``eval.<model>.<agent>.b<batch size>.``, with the result as
    ``evaluations/<id>.json``; otherwise a run of its own is started in the experiment
    ``$MLFLOW_EXPERIMENT_NAME`` (default ``forgeml-eval``) with the options as params,
    figures as metrics, version and commit as tags and the result as ``evaluation.json``
    (see :func:`tracking_payload`). A failure to log never fails the evaluation: it
    becomes one of the result's warnings.
    """
    from forgeml import track

    active = track.active_run()
    if active is not None and not getattr(active, "enabled", True):
        return None  # a distributed worker of rank > 0: rank 0 logs
    if active is None and not uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    payload = tracking_payload(result)
    try:
        if active is not None:
            prefix = f"eval.{result.model}.{result.agent}.b{result.batch_size}."
            active.log_metrics({prefix + k: v for k, v in payload["metrics"].items()})
            active.log_text(result.to_json(), f"evaluations/{result.id}.json")
            return str(active.run_id)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "forgeml-eval"
        run_name = f"eval {result.model} {result.agent} b{result.batch_size} {result.device}"
        with track.start_run(
            experiment,
            run_name=run_name,
            uri=uri,
            tags=payload["tags"],
            params=payload["params"],
            log_output=False,
            log_system=False,
        ) as run:
            run.log_metrics(payload["metrics"])
            for name, text in payload["artifacts"].items():
                run.log_text(text, name)
        return str(run.run_id)
    except Exception as exc:  # MLflow's errors have no common base; the result still counts
        result.warnings.append(
            f"Could not log the evaluation to MLflow ({type(exc).__name__}: {exc}). The "
            f"evaluation itself is complete."
        )
        return None


def tracking_payload(result: EvalResult) -> dict[str, Any]:
    """What an MLflow run of ``result`` holds: params, metrics, tags and a JSON artifact."""
    params = {
        "model": result.model,
        "model_version": result.model_version,
        "framework": result.framework,
        "agent": result.agent,
        "task": result.task,
        "dataset": result.dataset,
        "batch_size": result.batch_size,
        "device": result.device,
        "num_warmup": result.num_warmup,
    }
    metrics: dict[str, float] = {
        "throughput": result.throughput,
        "num_samples": float(result.num_samples),
        "num_batches": float(result.num_batches),
        **result.scalar_metrics(),
    }
    for phase, stats in result.latency.items():
        for name in ("min", "mean", "p50", "p90", "p95", "p99", "max"):
            metrics[f"latency_{phase}_{name}_ms"] = float(getattr(stats, name))
    tags = {
        "forgeml.eval_id": result.id,
        "forgeml.version": str(result.provenance.get("forgeml_version", "")),
        "git_commit": str(result.provenance.get("git_commit") or ""),
    }
    return {
        "params": params,
        "metrics": metrics,
        "tags": tags,
        "artifacts": {"evaluation.json": result.to_json()},
    }
