"""The built-in exporters: thin layers over the framework adapters' export methods.

=======================  ============  ==================================================
registry name            writes        with
=======================  ============  ==================================================
pytorch->onnx            ``.onnx``     ``torch.onnx.export`` (TorchScript-based, opset 17)
pytorch->torchscript     ``.pt``       ``torch.jit.trace`` or ``torch.jit.script``
sklearn->onnx            ``.onnx``     skl2onnx (opset 17)
xgboost->onnx            ``.onnx``     onnxmltools (opset 15, its highest)
tensorflow->onnx         ``.onnx``     tf2onnx (Keras on the TensorFlow backend, opset 17)
onnxruntime->tensorrt    ``.engine``   TensorRT's ONNX parser and builder (NVIDIA GPU)
=======================  ============  ==================================================

ONNX exports are checked with ``onnx.checker`` and, with ``fp16``, converted to
float16 weights and arithmetic behind float32 inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml._core._errors import ExportError
from forgeml._core._lazy import is_installed
from forgeml.export._protocol import ExportOptions, ExportSource


def _adapter(name: str) -> Any:
    from forgeml.frameworks import get_adapter

    return get_adapter(name)


def _missing(packages: tuple[str, ...], hint: str) -> str | None:
    missing = [p for p in packages if not is_installed(p)]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{', '.join(missing)} {verb} not installed. HINT: {hint}"


class BaseExporter:
    """What the built-in exporters share: their names, package checks and option checks."""

    source = ""
    target = ""
    framework = ""
    format = ""
    suffix = ""
    #: Importable packages it needs, and how to install them.
    packages: tuple[str, ...] = ()
    hint = ""
    #: Whether it writes half precision / INT8 / honours ``method``.
    supports_fp16 = True
    supports_int8 = False

    def unavailable(self, options: ExportOptions) -> str | None:
        return _missing(self.packages, self.hint)

    def check_options(self, options: ExportOptions) -> None:
        """Refuse options this exporter cannot honour (rather than silently ignore them)."""
        where = f"Exporting {self.source} models to {self.target}"
        if options.int8 and not self.supports_int8:
            raise ExportError(
                f"{where} does not support INT8. INT8 engines are built by TensorRT "
                f"(--to tensorrt --int8 --calibration DATASET)."
            )
        if options.fp16 and not self.supports_fp16:
            raise ExportError(
                f"{where} does not support fp16 (its operators compute in float32 only). "
                f"Export without --fp16."
            )

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        """Write the exported model to ``path``; each exporter subclass implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement export()")

    def __repr__(self) -> str:
        return f"<exporter {self.source}->{self.target}>"


class OnnxExporter(BaseExporter):
    """Writes ``.onnx``: the adapter converts, then ``onnx.checker`` checks and fp16 converts."""

    target = "onnx"
    framework = "onnxruntime"
    format = "onnx"
    suffix = ".onnx"
    #: The adapter whose ``export_onnx`` converts the model.
    adapter_name = ""
    default_opset = 17

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        if source.model is None:
            raise ExportError(f"The {self.source}->onnx exporter needs the model object.")
        opset = options.opset or self.default_opset
        kwargs: dict[str, Any] = {
            "opset": opset,
            "dynamic_batch": options.dynamic_batch,
            "input_name": options.input_name,
        }
        info: dict[str, Any] = _adapter(self.adapter_name).export_onnx(
            source.model, source.batch, path, **kwargs
        )
        runtime = _adapter("onnxruntime")
        if options.fp16:
            runtime.convert_float16(path)
        checked: dict[str, Any] = runtime.check_onnx(path)
        return {**checked, **info}  # "opset": the one asked for; "opsets": every domain's


class TorchOnnx(OnnxExporter):
    source = "pytorch"
    adapter_name = "torch"
    packages = ("torch", "onnx", "onnxruntime")
    hint = "pip install 'forgeml[torch,onnx]'"


class SklearnOnnx(OnnxExporter):
    source = "sklearn"
    adapter_name = "sklearn"
    packages = ("sklearn", "skl2onnx", "onnx", "onnxruntime")
    hint = "pip install 'forgeml[sklearn,onnx]'"


class XGBoostOnnx(OnnxExporter):
    source = "xgboost"
    adapter_name = "xgboost"
    packages = ("xgboost", "onnxmltools", "onnx", "onnxruntime")
    hint = "pip install 'forgeml[xgboost,onnx]'"
    default_opset = 15  # onnxmltools' XGBoost converter writes no higher opset
    supports_fp16 = False  # tree ensembles (ai.onnx.ml) compute in float32 only


class KerasOnnx(OnnxExporter):
    source = "tensorflow"
    adapter_name = "keras"
    packages = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")
    hint = "pip install 'forgeml[tensorflow,onnx]' (TensorFlow and tf2onnx)"

    def unavailable(self, options: ExportOptions) -> str | None:
        missing = super().unavailable(options)
        if missing is not None:
            return missing
        reason: str | None = _adapter("keras").export_unavailable()
        return reason


class TorchScript(BaseExporter):
    """``torch.jit.trace`` (default) or ``torch.jit.script``; a ``.pt`` TorchScript program."""

    source = "pytorch"
    target = "torchscript"
    framework = "torchscript"
    format = "torchscript"
    suffix = ".torchscript.pt"
    packages = ("torch",)
    hint = "pip install 'forgeml[torch]'"

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        info: dict[str, Any] = _adapter("torch").export_torchscript(
            source.model, source.batch, path, method=options.method, fp16=options.fp16
        )
        return info


class OnnxTensorRT(BaseExporter):
    """An ONNX model built into a TensorRT engine for the GPU it is built on (cached)."""

    source = "onnxruntime"
    target = "tensorrt"
    framework = "tensorrt"
    format = "engine"
    suffix = ".engine"
    supports_int8 = True

    def unavailable(self, options: ExportOptions) -> str | None:
        from forgeml.eval.agents import get_agent

        return get_agent("tensorrt").unavailable()

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        from forgeml._core._files import atomic_write_bytes

        if source.path is None:
            raise ExportError("The onnxruntime->tensorrt exporter needs the source .onnx file.")
        batch = int(source.batch.shape[0])
        engine, info = _adapter("tensorrt").build_engine(
            source.path,
            device=source.device,
            sample_shape=tuple(int(d) for d in source.batch.shape[1:]),
            max_batch=options.max_batch if options.dynamic_batch else batch,
            min_batch=1 if options.dynamic_batch else batch,
            fp16=options.fp16,
            int8=options.int8,
            calibration=source.calibration,
            cache_dir=source.cache_dir,
        )
        atomic_write_bytes(path, engine)
        return dict(info)


torch_onnx = TorchOnnx()
torch_torchscript = TorchScript()
sklearn_onnx = SklearnOnnx()
xgboost_onnx = XGBoostOnnx()
keras_onnx = KerasOnnx()
onnx_tensorrt = OnnxTensorRT()
