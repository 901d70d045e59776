"""What an exporter is, what it is given, and the registry of exporters.

An exporter turns a model of one framework (a manifest framework: ``pytorch``,
``sklearn``, ...) into a file of one target format (``onnx``, ``torchscript``,
``tensorrt``). It is registered under ``"<source>-><target>"`` in
:data:`EXPORTERS`; third parties add theirs through the entry-point group
``forgeml.exporters`` (e.g. ``"pytorch->openvino" = "mypkg.export:openvino"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from forgeml._core._registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from forgeml.eval import Manifest

#: The precision-dependent default tolerances ``(atol, rtol)`` of the parity check.
TOLERANCES: Mapping[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (1e-2, 1e-2),
    "int8": (1e-1, 1e-1),
}


@dataclass(frozen=True)
class ExportOptions:
    """How to export: what applies depends on the exporter (each ignores the rest)."""

    #: ONNX opset (None: the exporter's default).
    opset: int | None = None
    #: Leave the batch axis open (ONNX, TensorRT); else fixed to the validation batch's size.
    dynamic_batch: bool = True
    #: Half-precision weights and arithmetic (inputs and outputs stay float32).
    fp16: bool = False
    #: 8-bit kernels calibrated on real data (TensorRT).
    int8: bool = False
    #: TorchScript: ``"trace"`` (run the model on the sample) or ``"script"`` (compile it).
    method: str = "trace"
    #: TensorRT: the largest batch the engine takes.
    max_batch: int = 64
    #: The name of the exported model's input.
    input_name: str = "input"

    @property
    def precision(self) -> str:
        """``"int8"``, ``"fp16"`` or ``"fp32"``."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "dynamic_batch": self.dynamic_batch,
            "fp16": self.fp16,
            "int8": self.int8,
            "method": self.method,
            "max_batch": self.max_batch,
            "input_name": self.input_name,
        }


@dataclass
class ExportSource:
    """The model to export, as the source framework's agent loaded it."""

    #: The framework's model object (a ``torch.nn.Module``, an estimator, ...), or None
    #: for runtimes that load files (an ONNX Runtime session is not exported: its file is).
    model: Any
    #: The source's weights file (an ``.onnx`` file for ``onnxruntime`` models), if any.
    path: Path | None
    #: A batch of model inputs from the validation data; its samples trace the model.
    batch: np.ndarray[Any, Any]
    #: The source manifest (None when a bare model object is exported).
    manifest: Manifest | None = None
    #: INT8 calibration batches (model inputs, all of one shape).
    calibration: Sequence[np.ndarray[Any, Any]] = ()
    #: The device the exported model is checked on (``cpu``, ``cuda:N``).
    device: str = "cpu"
    #: Where exporters may keep build caches (TensorRT engines).
    cache_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Exporter(Protocol):
    """Turns a model of framework :attr:`source` into a :attr:`target` file."""

    #: The manifest framework it reads: ``pytorch``, ``sklearn``, ``onnxruntime``, ...
    source: str
    #: The format it writes: ``onnx``, ``torchscript``, ``tensorrt``, ...
    target: str
    #: The manifest framework that runs the result (its agent checks the export).
    framework: str
    #: The ``weights.format`` of the result in its manifest.
    format: str
    #: The file suffix of the result (default output names end in it).
    suffix: str

    def unavailable(self, options: ExportOptions) -> str | None:
        """Why it cannot export here (a missing package, no GPU), or None."""
        ...

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        """Write the export to ``path``; returns facts worth recording (opset, versions)."""
        ...


EXPORTERS = Registry("exporters")
for _key, _attr, _hint in (
    ("pytorch->onnx", "torch_onnx", "pip install 'forgeml[torch,onnx]'"),
    ("pytorch->torchscript", "torch_torchscript", "pip install 'forgeml[torch]'"),
    ("sklearn->onnx", "sklearn_onnx", "pip install 'forgeml[sklearn,onnx]'"),
    ("xgboost->onnx", "xgboost_onnx", "pip install 'forgeml[xgboost,onnx]'"),
    ("tensorflow->onnx", "keras_onnx", "pip install 'forgeml[tensorflow,onnx]'"),
    ("onnxruntime->tensorrt", "onnx_tensorrt", "pip install tensorrt cuda-python (NVIDIA GPU)"),
):
    EXPORTERS.register(_key, f"forgeml.export._exporters:{_attr}", hint=_hint)


def exporter_key(source: str, target: str) -> str:
    """The registry name of the exporter from ``source`` to ``target``: ``"pytorch->onnx"``."""
    return f"{source}->{target}"


def targets() -> list[str]:
    """The formats some exporter writes, sorted."""
    return sorted({name.partition("->")[2] for name in EXPORTERS.names()})
