"""Tracing an evaluation: the spans around it, a traced copy of the timed loop, export.

``forgeml.eval.evaluate(trace_level=...)`` creates an :class:`EvalTracing`. It
opens the ``evaluation`` span, the runner wraps dataset load, model load and
warmup in its spans, and runs :meth:`EvalTracing.loop` instead of its untraced
loop (the untraced loop stays exactly as it was: tracing off adds no work per
batch). :meth:`EvalTracing.finish` closes the trace and exports it: a Chrome
trace file (default ``$FORGEML_HOME/traces/<evaluation id>.trace.json``), and
OTLP when an endpoint is given or configured in the environment.

:func:`run_leveled` is ``trace_mode="leveled"``: one run per level up to the
one asked for, each level's latency from its own run (after XSP, MLModelScope's
profiler), so deeper levels' hooks never inflate a shallower level's figures.
Only the deepest level's trace goes over OTLP (:func:`otlp_off` holds the others back).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from forgeml._core._errors import ForgeMLError, RegistryError, TraceError
from forgeml.trace._levels import TraceLevel, parse_level
from forgeml.trace._tracer import DEFAULT_CAPACITY, DEFAULT_SAMPLE_BATCHES, Tracer

MODES = ("single", "leveled")
_APP = int(TraceLevel.APPLICATION)
_MODEL = int(TraceLevel.MODEL)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        from forgeml._core._errors import did_you_mean

        raise TraceError(
            f"The trace mode is one of {', '.join(MODES)} (leveled: one run per level, each "
            f"level's latency from its own run). Got {mode!r}." + did_you_mean(str(mode), MODES)
        )
    return mode


def default_trace_path(evaluation_id: str) -> Path:
    """``$FORGEML_HOME/traces/<evaluation id>.trace.json``."""
    from forgeml._core._env import forgeml_home

    return forgeml_home() / "traces" / f"{evaluation_id}.trace.json"


def check_trace_file(trace_file: str | os.PathLike[str] | None) -> Path | None:
    """The trace file's path (None: the default folder), after checking that its folder can
    be created and written, so a bad ``trace_file`` fails before the evaluation runs rather
    than after it. Raises :class:`TraceError` saying why and what to pass instead."""
    path = Path(trace_file).expanduser() if trace_file is not None else None
    if path is not None and path.is_dir():
        raise TraceError(
            f"The trace file '{trace_file}' is a folder. Give a file path, e.g. "
            f"'{path / 'eval.trace.json'}'."
        )
    folder = path.parent if path is not None else default_trace_path("x").parent
    what = f"trace file '{trace_file}'" if path is not None else "default trace folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".forgeml-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        fix = (
            "Pass --trace_file (trace_file=) in a folder you can write."
            if path is not None
            else "Set FORGEML_HOME to a folder you can write, or pass --trace_file."
        )
        raise TraceError(
            f"The {what} cannot be written: folder '{folder}' cannot be created or written "
            f"({reason}). {fix}"
        ) from None
    return path


_OTLP_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("forgeml_otlp_off", default=False)


@contextlib.contextmanager
def otlp_off() -> Iterator[None]:
    """Within this block, evaluations write their trace file but send nothing over OTLP
    (the leveled mode's shallower runs: one trace per evaluation reaches the collector)."""
    token = _OTLP_OFF.set(True)
    try:
        yield
    finally:
        _OTLP_OFF.reset(token)


class EvalTracing:
    """The trace of one evaluation (see the module docstring)."""

    def __init__(
        self,
        level: Any,
        *,
        trace_file: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        sample_batches: int = DEFAULT_SAMPLE_BATCHES,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.tracer = Tracer(level, capacity=capacity, sample_batches=sample_batches)
        if self.tracer.level <= 0:
            raise TraceError("EvalTracing needs a trace level above NO_TRACE.")
        self.trace_file = check_trace_file(trace_file)  # before the run, not after it
        self.endpoint = endpoint
        self.protocol = protocol
        if endpoint is not None:
            from forgeml.trace._otlp import otlp_settings

            otlp_settings(endpoint, protocol)  # refuse a bad endpoint before the run
        self.tracer.meta.update(meta or {})
        self.warnings: list[str] = []
        self.tracer.start("evaluation", _APP)

    def span(self, name: str, level: int = _APP, **attrs: Any) -> Any:
        return self.tracer.span(name, level, **attrs)

    def _attach(self, predictor: Any) -> Any:
        from forgeml.trace._registries import LAYER_TRACERS

        framework = str((getattr(predictor, "info", None) or {}).get("framework", ""))
        if framework not in LAYER_TRACERS:
            self.tracer.notes.append(
                f"No layer tracer for framework '{framework or '?'}' (known: "
                f"{', '.join(LAYER_TRACERS.names())}): no layer spans."
            )
            return None
        try:
            attach = LAYER_TRACERS.load(framework)
        except RegistryError as exc:
            self.tracer.notes.append(f"No layer spans: {exc}")
            return None
        return attach(predictor, self.tracer)

    @contextlib.contextmanager
    def _attached(
        self, predictor: Any, warmup: Callable[[int], int] | None = None
    ) -> Iterator[Any]:
        level = self.tracer.level
        hooks = self._attach(predictor) if level >= TraceLevel.FRAMEWORK else None
        warm = getattr(hooks, "warm", None)
        if warm is not None and warmup is not None:
            # a layer tracer that swapped in a new session (ONNX Runtime) warms it up, so
            # the first timed batches do not pay its warm-up
            with self.span("warmup_traced_session", _APP):
                warm(warmup)
        sampler = None
        if level >= TraceLevel.HARDWARE:
            from forgeml.trace._hardware import HardwareSampler

            sampler = HardwareSampler(self.tracer).start()
        try:
            yield hooks
        finally:
            if sampler is not None:
                sampler.stop()
            if hooks is not None:
                with self.span("collect_layer_spans", _APP):
                    hooks.close()

    def loop(
        self,
        batches: Iterator[Any],
        *,
        task: Any,
        manifest: Any,
        predictor: Any,
        sync: Callable[[], None] | None,
        update: Callable[[Any, Any, Any], None] | None,
        finish: Callable[[], None] | None,
        sink: Callable[[Any, Any, Any], None] | None,
        recorder: Any,
        max_batches: int,
        progress: Callable[[int, int], None] | None,
        stride: int,
        total: int,
        warmup: Callable[[int], int] | None = None,
    ) -> tuple[int, int, int]:
        """The runner's timed loop with spans: same arguments, same result, same timings
        (the phases are timed with the same clock readings the spans use). ``warmup(n)``
        runs up to ``n`` warmup batches and returns how many ran; a layer tracer that
        replaces the model's session uses it to warm the new session before timing."""
        with self._attached(predictor, warmup) as hooks:
            return self._loop(
                batches,
                preprocess=task.preprocess,
                postprocess=task.postprocess,
                manifest=manifest,
                predict=predictor.predict,
                sync=sync,
                update=update,
                finish=finish,
                sink=sink,
                recorder=recorder,
                max_batches=max_batches,
                progress=progress,
                stride=stride,
                total=total,
                hooks=hooks,
            )

    def _loop(
        self,
        batches: Iterator[Any],
        *,
        preprocess: Callable[[Any, Any], Any],
        postprocess: Callable[[Any, Any], Any],
        manifest: Any,
        predict: Callable[[Any], Any],
        sync: Callable[[], None] | None,
        update: Callable[[Any, Any, Any], None] | None,
        finish: Callable[[], None] | None,
        sink: Callable[[Any, Any, Any], None] | None,
        recorder: Any,
        max_batches: int,
        progress: Callable[[int, int], None] | None,
        stride: int,
        total: int,
        hooks: Any,
    ) -> tuple[int, int, int]:
        tracer = self.tracer
        clock = tracer.clock
        record = tracer.record
        new_id = tracer.new_id
        stack = tracer._stack
        parent = tracer.current
        traced_predict = tracer.level >= _MODEL
        begin = hooks.begin if hooks is not None else None
        end = hooks.end if hooks is not None else None
        pre_buf, pred_buf, post_buf, total_buf = recorder.buffers
        chunk = recorder.chunk
        flush = recorder.flush
        filled = done = samples = 0
        next_report = stride if progress is not None else -1
        start = clock()
        for batch in batches:
            bid = new_id()
            t0 = clock()
            inputs = preprocess(batch.raw, manifest)
            t1 = clock()
            if traced_predict:
                pid = new_id()
                stack.append((pid, "predict", _MODEL, t1, None))
                if begin is not None:
                    begin(done)
                outputs = predict(inputs)
                if sync is not None:
                    sync()
                t2 = clock()
                if end is not None:
                    end(done)
                stack.pop()
                record(pid, bid, "predict", _MODEL, t1, t2, None)
                t2p = clock() if end is not None else t2  # the hook's time is in no phase
            else:
                outputs = predict(inputs)
                if sync is not None:
                    sync()
                t2 = t2p = clock()
            predictions = postprocess(outputs, manifest)
            t3 = clock()
            record(new_id(), bid, "preprocess", _APP, t0, t1, None)
            record(new_id(), bid, "postprocess", _APP, t2p, t3, None)
            size = len(batch.ids)
            record(bid, parent, "batch", _APP, t0, t3, {"index": done, "size": size})
            if update is not None:
                update(predictions, outputs, batch.labels)
            if sink is not None:
                sink(batch, predictions, outputs)
            pre_buf[filled] = t1 - t0
            pred_buf[filled] = t2 - t1
            post_buf[filled] = t3 - t2p
            total_buf[filled] = t3 - t0 - (t2p - t2)
            filled += 1
            samples += size
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
            finish()
        elapsed = clock() - start
        flush(filled)
        if progress is not None and done != next_report - stride:
            progress(done, total)
        return done, samples, elapsed

    def finish(self, result: Any) -> dict[str, Any]:
        """Close the evaluation span and export; returns what the result records as ``trace``."""
        tracer = self.tracer
        while len(tracer._stack) > 1:
            tracer.end({"error": True})
        if tracer._stack:
            tracer.end(
                {
                    "model": result.model,
                    "agent": result.agent,
                    "batch_size": result.batch_size,
                    "device": result.device,
                    "evaluation_id": result.id,
                }
            )
        tracer.meta.update(
            {
                "evaluation_id": result.id,
                "model": result.model,
                "agent": result.agent,
                "framework": result.framework,
                "batch_size": result.batch_size,
                "device": result.device,
                "throughput": result.throughput,
            }
        )
        from forgeml.trace._registries import TRACE_EXPORTERS

        path = self.trace_file or default_trace_path(result.id)
        written: str | None = None
        try:
            written = TRACE_EXPORTERS.load("chrome").export(tracer, path)
        except Exception as exc:  # disk full, folder gone: the evaluation still counts
            detail = str(exc) if isinstance(exc, ForgeMLError) else f"{type(exc).__name__}: {exc}"
            self.warnings.append(
                f"The trace file could not be written to '{path}' ({detail}). The evaluation "
                f"itself is complete; run it again with --trace_file in a folder you can write "
                f"for its trace."
            )
        info: dict[str, Any] = {
            "level": tracer.level_name,
            "mode": "single",
            "file": written,
            **{k: v for k, v in tracer.stats().items() if k != "level"},
            "otlp": None,
            "notes": list(tracer.notes),
        }
        if tracer.dropped:
            self.warnings.append(
                f"The trace buffer was full: {tracer.dropped} span(s) were dropped (kept "
                f"{len(tracer.spans)}). Trace fewer batches (--num_batches) or a shallower level."
            )
        from forgeml.trace._otlp import otlp_configured

        if not _OTLP_OFF.get() and (self.endpoint is not None or otlp_configured()):
            try:
                info["otlp"] = TRACE_EXPORTERS.load("otlp").export(
                    tracer, self.endpoint, protocol=self.protocol
                )
            except ForgeMLError as exc:
                self.warnings.append(f"The trace was not sent over OTLP: {exc}")
            except Exception as exc:  # network and SDK errors: the evaluation still counts
                self.warnings.append(
                    f"The trace was not sent over OTLP ({type(exc).__name__}: {exc})."
                    + (f" It is in {written}." if written else "")
                )
        return info


def run_leveled(run: Callable[[TraceLevel], Any], level: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``run(level)`` for every level from NO_TRACE to ``level``; returns the NO_TRACE
    run's result (its latencies untouched by tracing) and the ``trace`` record: each
    level's figures from its own run, and its overhead against NO_TRACE."""
    top = parse_level(level)
    results = [(lv, run(lv)) for lv in TraceLevel if lv <= top]
    base = results[0][1]
    rows = []
    for lv, result in results:
        predict = result.latency.get("predict")
        total = result.latency.get("total")
        ratio = result.throughput / base.throughput if base.throughput else None
        rows.append(
            {
                "level": lv.name,
                "evaluation_id": result.id,
                "throughput": result.throughput,
                "throughput_ratio": ratio,
                "overhead": (1 / ratio - 1) if ratio else None,
                "predict_p50_ms": predict.p50 if predict is not None else None,
                "predict_mean_ms": predict.mean if predict is not None else None,
                "total_p50_ms": total.p50 if total is not None else None,
                "file": (result.trace or {}).get("file"),
                "spans": (result.trace or {}).get("spans"),
                "dropped": (result.trace or {}).get("dropped"),
            }
        )
        if lv != TraceLevel.NO_TRACE:
            base.warnings.extend(w for w in result.warnings if "trace" in w.lower())
    deepest = results[-1][1].trace or {}
    record = {
        **deepest,
        "level": top.name,
        "mode": "leveled",
        "levels": rows,
    }
    return base, record


def trace_parts(trace: dict[str, Any]) -> list[Any]:
    """Rich renderables for a result's ``trace`` record (printed under the result)."""
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text("")]
    where = trace.get("file") or "(no file)"
    line = (
        f"trace ({trace.get('level')}, {trace.get('mode', 'single')}): {where}"
        f" · {trace.get('spans', 0)} spans"
    )
    if trace.get("dropped"):
        line += f", {trace['dropped']} dropped"
    if trace.get("otlp"):
        line += f" · sent to {trace['otlp']}"
    parts.append(Text(line))
    levels = trace.get("levels")
    if levels:
        table = Table(box=None, padding=(0, 1), pad_edge=False)
        for column in ("level", "samples/s", "vs NO_TRACE", "predict p50 (ms)", "total p50 (ms)"):
            table.add_column(column, justify="left" if column == "level" else "right")
        for row in levels:
            ratio = row.get("throughput_ratio")
            table.add_row(
                row["level"],
                f"{row['throughput']:,.1f}",
                f"{ratio:.3f}" if ratio is not None else "-",
                _ms(row.get("predict_p50_ms")),
                _ms(row.get("total_p50_ms")),
            )
        parts += [Text("tracing overhead per level (each level from its own run):"), table]
    return parts


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
