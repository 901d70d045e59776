"""Layer and operator spans for torch modules (forgeml.trace, FRAMEWORK and LIBRARY levels).

FRAMEWORK: a forward pre-hook and a forward hook on every named submodule open
and close a span named by the module's path (``features.0``), so nested modules
nest. LIBRARY: ``torch.profiler`` records the operators (CPU ops; on a GPU also
CUDA kernels, memcpy and memset through CUPTI) while the hooks mark each layer
call with a ``record_function`` range; after the run each operator is put under
the layer whose range contains it (the profiler's own parent links, so no clock
matching is needed beyond one offset per layer). The first ``sample_batches``
batches keep every operator as a span; later ones are folded into per-layer
aggregates (calls and total time per operator), so the trace stays small. The
profiler is restarted every :data:`CHUNK` batches to bound its memory.
"""

from __future__ import annotations

from typing import Any

import torch

from forgeml.trace._levels import TraceLevel
from forgeml.trace._tracer import Tracer

#: Batches per profiler session (its events are turned into spans, then dropped).
CHUNK = 100
_FRAMEWORK = int(TraceLevel.FRAMEWORK)
_LIBRARY = int(TraceLevel.LIBRARY)
_SAMPLED = "forgeml#"
_FOLDED = "forgeml@"


class TorchLayerTracer:
    def __init__(self, model: Any, tracer: Tracer, device: str) -> None:
        self.tracer = tracer
        self.model = model
        self.library = tracer.level >= _LIBRARY
        self.full = tracer.level >= TraceLevel.FULL
        self.cuda = device.startswith("cuda")
        self.batch = 0
        self.sampled = True
        self.starts: dict[int, int] = {}
        self.ranges: list[Any] = []
        self.handles: list[Any] = []
        self.profiler: Any = None
        self.predict_range: Any = None
        self.layers = 0
        for path, module in model.named_modules():
            if not path:
                continue
            attrs = {"type": type(module).__name__}
            self.handles.append(module.register_forward_pre_hook(self._pre(path, attrs)))
            self.handles.append(module.register_forward_hook(self._post()))
            self.layers += 1
        tracer.meta["layers"] = self.layers
        if self.library:
            self._start_profiler()

    def _pre(self, path: str, attrs: dict[str, Any]) -> Any:
        tracer = self.tracer
        start = tracer.start
        record_function = torch.profiler.record_function
        ranges = self.ranges
        starts = self.starts
        library = self.library

        def pre(module: Any, args: Any) -> None:
            sid = start(path, _FRAMEWORK, attrs)
            if library:
                if self.sampled:
                    rf = record_function(f"{_SAMPLED}{sid}")
                    starts[sid] = tracer._stack[-1][3]
                else:
                    rf = record_function(f"{_FOLDED}{path}")
                rf.__enter__()
                ranges.append(rf)

        return pre

    def _post(self) -> Any:
        end = self.tracer.end
        ranges = self.ranges
        library = self.library

        def post(module: Any, args: Any, output: Any) -> None:
            if library and ranges:
                ranges.pop().__exit__(None, None, None)
            end()

        return post

    # -- the runner's calls -----------------------------------------------------------------

    def begin(self, batch: int) -> None:
        self.batch = batch
        if not self.library:
            return
        self.sampled = batch < self.tracer.sample_batches
        if self.sampled:
            sid = self.tracer.current
            self.starts[sid] = self.tracer._stack[-1][3]
            name = f"{_SAMPLED}{sid}"
        else:
            name = f"{_FOLDED}"
        self.predict_range = torch.profiler.record_function(name)
        self.predict_range.__enter__()

    def end(self, batch: int) -> None:
        if not self.library:
            return
        if self.predict_range is not None:
            self.predict_range.__exit__(None, None, None)
            self.predict_range = None
        if not self.sampled:
            self.tracer.aggregated_batches += 1
        if (batch + 1) % CHUNK == 0:
            self._collect()
            self._start_profiler()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.profiler is not None:
            self._collect()

    # -- the profiler -----------------------------------------------------------------------

    def _start_profiler(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities, record_shapes=self.full)
        self.profiler.__enter__()

    def _collect(self) -> None:
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return
        profiler.__exit__(None, None, None)
        tracer = self.tracer
        offsets: dict[int, int] = {}  # profiler range -> ns to add to its times
        ids: dict[int, int] = {}  # id(event) -> its span id (sampled ops, for nesting)
        events = sorted(profiler.events(), key=lambda e: e.time_range.start)
        for event in events:
            name = event.name
            if name.startswith(_SAMPLED):
                sid = int(name[len(_SAMPLED) :])
                ids[id(event)] = sid
                if sid in self.starts:
                    offsets[id(event)] = self.starts.pop(sid) - int(event.time_range.start * 1000)
        for event in events:
            name = event.name
            if name.startswith(("forgeml#", "forgeml@")) or event.device_type != _CPU:
                continue
            owner, direct = _owner(event)
            if owner is None:
                continue
            owner_name = owner.name
            kernels = list(getattr(event, "kernels", ()) or ())
            if owner_name.startswith(_FOLDED):
                layer = owner_name[len(_FOLDED) :] or "(model)"
                if direct:
                    tracer.aggregate(layer, name, int(event.time_range.elapsed_us() * 1000))
                for kernel in kernels:  # kernels at any depth: the deepest ops launch them
                    tracer.aggregate(layer, kernel.name, int(kernel.duration * 1000), kind="kernel")
                continue
            offset = offsets.get(id(owner))
            if offset is None:
                continue
            parent_event = event.cpu_parent
            parent = ids.get(id(parent_event)) if parent_event is not None else None
            if parent is None:
                parent = ids[id(owner)]
            sid = tracer.new_id()
            ids[id(event)] = sid
            start = int(event.time_range.start * 1000) + offset
            end = int(event.time_range.end * 1000) + offset
            attrs: dict[str, Any] = {"kernels": len(kernels)}
            if self.full and getattr(event, "input_shapes", None):
                attrs["input_shapes"] = str(event.input_shapes)
            tracer.record(sid, parent, name, _LIBRARY, start, end, attrs)
            for kernel in kernels:
                tracer.record(
                    tracer.new_id(),
                    sid,
                    kernel.name,
                    _LIBRARY,
                    start,
                    start + int(kernel.duration * 1000),
                    {"kind": "kernel", "device": kernel.device},
                )


_CPU = torch.autograd.DeviceType.CPU


def _owner(event: Any) -> tuple[Any, bool]:
    """The innermost forgeml range above ``event``, and whether it is its direct parent."""
    parent = event.cpu_parent
    direct = True
    while parent is not None:
        if parent.name.startswith(("forgeml#", "forgeml@")):
            return parent, direct
        direct = False
        parent = parent.cpu_parent
    return None, False


def attach(predictor: Any, tracer: Tracer) -> TorchLayerTracer | None:
    """Layer (and operator) spans for the predictor's ``torch.nn.Module``; None for a
    TorchScript program (it takes no Python hooks: a note says so)."""
    model = getattr(predictor, "model", None)
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        tracer.notes.append(
            "TorchScript programs take no forward hooks: no layer spans (run the pytorch "
            "agent on the module for them)."
        )
        return None
    return TorchLayerTracer(model, tracer, str(getattr(predictor, "device", "cpu")))
