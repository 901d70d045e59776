"""TensorRT adapter: engines from ``.engine``/``.plan`` files or built from ``.onnx``, on a GPU.

Needs an NVIDIA GPU, the ``tensorrt`` package and the CUDA runtime binding of
``cuda-python`` (``pip install tensorrt cuda-python``). Batches are copied to
the GPU, run with ``execute_async_v3`` on the engine's own CUDA stream, and
copied back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorrt as trt

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_write_bytes, atomic_write_text

try:  # cuda-python >= 12.6
    from cuda.bindings import runtime as cudart
except ImportError:
    try:  # older cuda-python
        from cuda import cudart
    except ImportError:  # reported when a CUDA call is made (see _cuda)
        cudart = None

#: engine files hold a serialized engine; ``.onnx`` files are built into one
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def _cuda(result: Any) -> Any:
    """The value of a ``cudart`` call (which returns ``(error, *values)``); raises on errors."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise ObjectError(f"CUDA call failed: {cudart.cudaGetErrorString(error)[1]!r}.")
    return values[0] if len(values) == 1 else None


def _device_index(device: str) -> int:
    """``"cuda:3"`` -> 3 (``"cuda"`` -> 0)."""
    return int(device.partition(":")[2] or 0)


def _read_cached(path: Path) -> bytes | None:
    """A cached engine whose sha256 matches its record, or None (missing or damaged)."""
    import hashlib

    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        engine = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or hashlib.sha256(engine).hexdigest() != record.get(
        "engine_sha256"
    ):
        return None
    return engine


def _calibrator(batches: Sequence[np.ndarray[Any, Any]]) -> Any:
    """An INT8 entropy calibrator that feeds ``batches`` (all of one shape) to TensorRT."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ObjectError(
            f"TensorRT {trt.__version__} has no INT8 calibrators (implicit quantization was "
            f"removed). Quantize the ONNX model explicitly (Q/DQ nodes) and build without --int8."
        )
    arrays = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not arrays or any(a.shape != arrays[0].shape for a in arrays):
        raise ObjectError("INT8 calibration batches must be non-empty and all of one shape.")

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(arrays)
            self.pointer = 0

        def get_batch_size(self) -> int:
            return int(arrays[0].shape[0])

        def get_batch(self, names: Any, *args: Any) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            if not self.pointer:
                self.pointer = int(_cuda(cudart.cudaMalloc(batch.nbytes)))
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _cuda(cudart.cudaMemcpy(self.pointer, batch.ctypes.data, batch.nbytes, kind))
            return [self.pointer] * len(names)

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            return None

        def free(self) -> None:
            if self.pointer:
                cudart.cudaFree(self.pointer)
                self.pointer = 0

    return Calibrator()


class Engine:
    """A deserialized engine, its execution context, a CUDA stream and device buffers."""

    def __init__(self, engine: Any, device_index: int) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device_index = device_index
        self.stream = _cuda(cudart.cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise ObjectError(
                f"forgeml runs TensorRT engines with one input and at least one output. "
                f"This one has inputs {inputs} and outputs {outputs}."
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (grown when needed)."""
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda(cudart.cudaFree(pointer))
            pointer, size = int(_cuda(cudart.cudaMalloc(nbytes))), nbytes
            self.buffers[name] = (pointer, size)
        return pointer

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            cudart.cudaFree(pointer)
        self.buffers.clear()
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class TensorRTAdapter:
    name = "tensorrt"
    module = "tensorrt"

    def __init__(self) -> None:
        self.logger = trt.Logger(trt.Logger.WARNING)

    # -- forgeml.eval: inference (devices, engines, predict on a batch) ----------------------

    def inference_info(self) -> dict[str, str]:
        return {"framework": "tensorrt", "version": str(trt.__version__)}

    def devices(self) -> list[str]:
        """``cuda:N`` for each GPU the CUDA runtime sees (TensorRT runs on GPUs only)."""
        if cudart is None:
            return []
        try:
            count = int(_cuda(cudart.cudaGetDeviceCount()))
        except ObjectError:
            return []
        return [f"cuda:{i}" for i in range(count)]

    def is_model(self, obj: object) -> bool:
        return isinstance(obj, Engine)

    def open(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "cuda:0",
        threads: int | None = None,
        sample_shape: tuple[int, ...] | None = None,
        max_batch: int = 64,
        fp16: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Engine:
        """An engine from a serialized ``.engine``/``.plan`` file, or built from ``.onnx``.

        Building makes the batch dimension dynamic up to ``max_batch`` (other
        dynamic dimensions are taken from ``sample_shape``); ``fp16`` allows
        half-precision kernels; ``cache_dir`` keeps built engines (see
        :meth:`build_engine`). ``threads`` does not apply (TensorRT runs on the GPU).
        """
        if cudart is None:
            raise ObjectError(
                "TensorRT's buffers need the CUDA runtime binding of cuda-python, which is not "
                "installed. HINT: pip install cuda-python"
            )
        file = Path(path)
        index = _device_index(device)
        _cuda(cudart.cudaSetDevice(index))
        runtime = trt.Runtime(self.logger)
        if file.suffix.lower() == ".onnx":
            data, _ = self.build_engine(
                file,
                device=device,
                sample_shape=sample_shape,
                max_batch=max_batch,
                fp16=fp16,
                cache_dir=cache_dir,
            )
        elif file.suffix.lower() in ENGINE_SUFFIXES:
            data = file.read_bytes()
        else:
            raise ObjectError(
                f"TensorRT loads engines ({', '.join(ENGINE_SUFFIXES)}) or builds them from "
                f".onnx files. Got {file}."
            )
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ObjectError(
                f"TensorRT cannot deserialize {file}: was it built by another TensorRT "
                f"version or for another GPU? Rebuild it from the .onnx file."
            )
        return Engine(engine, index)

    # -- forgeml.export: engines from ONNX, cached ---------------------------------------------

    def gpu_name(self, device: str = "cuda:0") -> str:
        """The name of the GPU ``device`` names (``"NVIDIA H100 80GB HBM3"``)."""
        if cudart is None:
            raise ObjectError("cuda-python is not installed. HINT: pip install cuda-python")
        properties = _cuda(cudart.cudaGetDeviceProperties(_device_index(device)))
        name = properties.name
        if isinstance(name, bytes | bytearray):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", errors="replace")
        return str(name).strip()

    def build_engine(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        device: str = "cuda:0",
        sample_shape: tuple[int, ...] | None = None,
        max_batch: int = 64,
        min_batch: int = 1,
        fp16: bool = False,
        int8: bool = False,
        calibration: Sequence[np.ndarray[Any, Any]] = (),
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> tuple[bytes, dict[str, Any]]:
        """A serialized engine built from the ONNX file, and what was built and how.

        The batch dimension ranges over ``min_batch..max_batch`` (optimised for
        ``max_batch``). ``fp16`` allows half-precision kernels; ``int8`` allows
        8-bit ones, calibrated on the ``calibration`` batches (TensorRT's entropy
        calibrator). With ``cache_dir``, engines are kept there under a key made of
        the model's sha256, the TensorRT version, the GPU's name and these options,
        and a later build with the same key reads the engine back (its sha256 is
        checked) instead of building it again.
        """
        import hashlib

        if cudart is None:
            raise ObjectError("cuda-python is not installed. HINT: pip install cuda-python")
        if int8 and not calibration:
            raise ObjectError(
                "An INT8 engine needs calibration batches (a few hundred samples of real data)."
            )
        file = Path(onnx_path)
        data = file.read_bytes()
        _cuda(cudart.cudaSetDevice(_device_index(device)))
        calibration_digest = hashlib.sha256()
        for batch in calibration:
            calibration_digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
        key_fields = {
            "model_sha256": hashlib.sha256(data).hexdigest(),
            "tensorrt": str(trt.__version__),
            "gpu": self.gpu_name(device),
            "sample_shape": list(sample_shape) if sample_shape is not None else None,
            "batch": [min_batch, max_batch],
            "fp16": fp16,
            "int8": int8,
            "calibration_sha256": calibration_digest.hexdigest() if int8 else None,
        }
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
        info: dict[str, Any] = {"cache_key": key, **key_fields, "cache": "off"}
        cached = Path(cache_dir) / f"{key}.engine" if cache_dir is not None else None
        if cached is not None:
            engine = _read_cached(cached)
            if engine is not None:
                return engine, {**info, "cache": "hit", "cache_file": str(cached)}
        engine = self._build(
            file, data, sample_shape, max_batch, fp16, min_batch=min_batch, int8=int8,
            calibration=calibration,
        )  # fmt: skip
        if cached is not None:
            atomic_write_bytes(cached, engine)
            record = {**key_fields, "engine_sha256": hashlib.sha256(engine).hexdigest()}
            atomic_write_text(cached.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
            info.update(cache="miss", cache_file=str(cached))
        return engine, info

    # -- end of forgeml.export --------------------------------------------------------------

    def _build(
        self,
        file: Path,
        data: bytes,
        sample_shape: tuple[int, ...] | None,
        max_batch: int,
        fp16: bool,
        *,
        min_batch: int = 1,
        int8: bool = False,
        calibration: Sequence[np.ndarray[Any, Any]] = (),
    ) -> bytes:
        builder = trt.Builder(self.logger)
        major = int(str(trt.__version__).split(".")[0])
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ObjectError(f"TensorRT cannot parse {file}: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        shapes = []
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = list(tensor.shape)
            sample = list(sample_shape or shape[1:])
            if len(sample) != len(shape) - 1:
                raise ObjectError(
                    f"{file}: input '{tensor.name}' has shape {shape}; the manifest's per-sample "
                    f"shape {sample} does not fit it."
                )
            rest = [s if d < 0 else d for d, s in zip(shape[1:], sample, strict=True)]
            if shape[0] < 0:
                profile.set_shape(
                    tensor.name, [min_batch, *rest], [max_batch, *rest], [max_batch, *rest]
                )
            else:
                profile.set_shape(tensor.name, [shape[0], *rest], [shape[0], *rest], shape)
            shapes.append((tensor.name, shape, rest))
        config.add_optimization_profile(profile)
        calibrator = None
        if int8:
            calibrator = _calibrator(calibration)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = calibrator
            size = calibrator.get_batch_size()
            fixed = builder.create_optimization_profile()
            for name, shape, rest in shapes:
                batch = [size if shape[0] < 0 else shape[0], *rest]
                fixed.set_shape(name, batch, batch, batch)
            config.set_calibration_profile(fixed)
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if serialized is None:
            raise ObjectError(f"TensorRT could not build an engine from {file} (see its log).")
        return bytes(serialized)

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The engine as it is (:meth:`open` put it on its GPU)."""
        return model, None

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """The engine's first output for ``batch``: copy in, execute, copy out, wait."""
        engine: Engine = model
        context = engine.context
        array = np.ascontiguousarray(batch, dtype=engine.dtypes[engine.input_name])
        context.set_input_shape(engine.input_name, tuple(array.shape))
        stream = engine.stream
        host_to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        device_to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        pointer = engine.buffer(engine.input_name, array.nbytes)
        _cuda(
            cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, host_to_device, stream)
        )
        context.set_tensor_address(engine.input_name, pointer)
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        for name, dtype in engine.dtypes.items():
            if name == engine.input_name:
                continue
            out = np.empty(tuple(context.get_tensor_shape(name)), dtype=dtype)
            context.set_tensor_address(name, engine.buffer(name, max(out.nbytes, 1)))
            outputs[name] = out
        if not context.execute_async_v3(int(stream)):
            raise ObjectError("TensorRT could not execute the engine on this batch.")
        out = outputs[engine.output_name]
        source = engine.buffers[engine.output_name][0]
        _cuda(cudart.cudaMemcpyAsync(out.ctypes.data, source, out.nbytes, device_to_host, stream))
        _cuda(cudart.cudaStreamSynchronize(stream))
        return out

    def synchronize(self, device: str) -> None:
        _cuda(cudart.cudaDeviceSynchronize())

    def close(self, model: Any) -> None:
        """Free the engine's device buffers and stream."""
        model.close()

    # -- end of forgeml.eval ----------------------------------------------------------------


adapter = TensorRTAdapter()
