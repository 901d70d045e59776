"""Node spans for ONNX Runtime sessions (forgeml.trace, FRAMEWORK level and deeper).

For a traced run the predictor's session is swapped for a second session over
the same model with ``SessionOptions.enable_profiling`` on (same providers and
options). The runner warms the new session up (:meth:`OrtNodeTracer.warm`, the
evaluation's warmup batches again, at most :data:`PROFILED_RUNS`), so the first
timed batches do not pay its warm-up; those runs are left out of the spans.
The first :data:`PROFILED_RUNS` timed predict calls are profiled; then profiling
ends (``end_profiling``) and later calls run unprofiled on the same, warm
session, so the profile and the trace stay bounded (a note says how many calls
have node spans). ONNX Runtime cannot restart profiling on a session, and a
fresh session mid-run would pay its warm-up inside the timed loop.

After the run ONNX Runtime's profile (JSON) is read back: the k-th timed
``model_run`` event is the k-th predict call, and its node events
(``<node>_kernel_time``, with ``op_name`` and provider) become spans under that
predict span, shifted onto forgeml's clock by one offset per call. ONNX Runtime
has no operator level below its nodes: LIBRARY adds nothing here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime

from forgeml.trace._levels import TraceLevel
from forgeml.trace._tracer import Tracer

#: Timed predict calls profiled (node spans); later ones run unprofiled. Also the most
#: warmup runs the profiled session gets.
PROFILED_RUNS = 100
_FRAMEWORK = int(TraceLevel.FRAMEWORK)


class OrtNodeTracer:
    def __init__(self, predictor: Any, tracer: Tracer) -> None:
        self.predictor = predictor
        self.tracer = tracer
        wrapper = predictor.model
        self.wrapper = wrapper
        self.original = wrapper.session
        self.folder = tempfile.mkdtemp(prefix="forgeml-ort-profile-")
        options = onnxruntime.SessionOptions()
        current = self.original.get_session_options()
        options.intra_op_num_threads = current.intra_op_num_threads
        options.inter_op_num_threads = current.inter_op_num_threads
        options.graph_optimization_level = current.graph_optimization_level
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(self.folder, "ort")
        provider_options = self.original.get_provider_options()
        model_path = getattr(self.original, "_model_path", None)
        source: Any = model_path or getattr(self.original, "_model_bytes", None)
        self.session = onnxruntime.InferenceSession(
            source,
            sess_options=options,
            providers=self.original.get_providers(),
            provider_options=[
                provider_options.get(name, {}) for name in self.original.get_providers()
            ],
        )
        wrapper.session = self.session
        #: (predict span id, start ns, end ns) per profiled call, in order
        self.calls: list[tuple[int, int, int]] = []
        #: predict calls seen (profiled or not)
        self.seen = 0
        #: warmup runs at the head of the profile (not predict calls of the timed loop)
        self.skip = 0
        #: the profile file, once profiling has ended
        self.profile: str | None = None
        self._open: tuple[int, int] | None = None

    def warm(self, run: Callable[[int], int]) -> None:
        """Warm the profiled session up: ``run(n)`` runs up to ``n`` warmup batches through
        the predictor (now on this session) and returns how many ran."""
        self.skip = run(PROFILED_RUNS)

    def begin(self, batch: int) -> None:
        if self.profile is None:
            stack = self.tracer._stack
            self._open = (stack[-1][0], stack[-1][3])

    def end(self, batch: int) -> None:
        self.seen += 1
        if self._open is not None:
            self.calls.append((self._open[0], self._open[1], self.tracer.clock()))
            self._open = None
            if len(self.calls) >= PROFILED_RUNS:
                self.profile = self.session.end_profiling()  # read back in close()

    def close(self) -> None:
        self.wrapper.session = self.original
        try:
            path = self.profile if self.profile is not None else self.session.end_profiling()
            events = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.tracer.notes.append(f"ONNX Runtime's profile could not be read: {exc}")
            events = []
        finally:
            for file in Path(self.folder).glob("*"):
                with contextlib.suppress(OSError):
                    file.unlink()
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)
        self._convert(events)
        if self.seen > len(self.calls):
            self.tracer.notes.append(
                f"ONNX Runtime profiled the first {len(self.calls)} of {self.seen} predict calls: "
                f"node spans for those only (later calls ran unprofiled on the same session, "
                f"which keeps the trace bounded)."
            )

    def _convert(self, events: list[dict[str, Any]]) -> None:
        tracer = self.tracer
        runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
        nodes = sorted(
            (
                e
                for e in events
                if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
            ),
            key=lambda e: int(e.get("ts", 0)),
        )
        runs.sort(key=lambda e: int(e.get("ts", 0)))
        runs = runs[self.skip :]  # the warmup runs
        position = 0
        for run, call in zip(runs, self.calls, strict=False):
            sid, start_ns, end_ns = call
            run_start = int(run["ts"])
            run_end = run_start + int(run.get("dur", 0))
            offset = start_ns - run_start * 1000
            while position < len(nodes) and int(nodes[position]["ts"]) < run_start:
                position += 1
            while position < len(nodes) and int(nodes[position]["ts"]) <= run_end:
                node = nodes[position]
                position += 1
                args = node.get("args") or {}
                name = str(node["name"]).removesuffix("_kernel_time")
                op = str(args.get("op_name", ""))
                begin = int(node["ts"]) * 1000 + offset
                tracer.record(
                    tracer.new_id(),
                    sid,
                    name,
                    _FRAMEWORK,
                    begin,
                    min(begin + int(node.get("dur", 0)) * 1000, end_ns),
                    {"type": op, "provider": str(args.get("provider", ""))},
                )
        if len(runs) != len(self.calls):
            tracer.notes.append(
                f"ONNX Runtime profiled {len(runs)} runs for {len(self.calls)} predict calls: "
                f"node spans were matched to the first {min(len(runs), len(self.calls))}."
            )


def attach(predictor: Any, tracer: Tracer) -> OrtNodeTracer | None:
    model = getattr(predictor, "model", None)
    session = getattr(model, "session", None)
    if session is None or not isinstance(session, onnxruntime.InferenceSession):
        tracer.notes.append("The predictor holds no ONNX Runtime session: no node spans.")
        return None
    return OrtNodeTracer(predictor, tracer)
