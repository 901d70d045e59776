"""The ``tensorrt`` agent (alias ``trt``): a TensorRT engine on an NVIDIA GPU.

The manifest's weights are a serialized engine (``.engine``/``.plan``), or an
``.onnx`` file that is built into one when loaded (batch dimension dynamic up
to ``attributes.max_batch``, default 64; ``attributes.precision: fp16`` allows
half-precision kernels) and kept in ``<cache>/tensorrt`` for the next load.
Needs an NVIDIA GPU, ``tensorrt`` and ``cuda-python``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml._core._env import nvidia_gpu_count
from forgeml._core._errors import EvalError
from forgeml._core._lazy import is_installed
from forgeml.eval._manifest import Manifest
from forgeml.eval.agents._base import FrameworkAgent, weights_file

SUFFIXES = (".engine", ".plan", ".trt", ".onnx")


class TensorRTAgent(FrameworkAgent):
    name = "tensorrt"
    framework = "tensorrt"
    adapter_name = "tensorrt"
    packages = ("tensorrt",)
    runs = "a TensorRT engine (.engine, .plan) or an .onnx file"

    def unavailable(self) -> str | None:
        if not nvidia_gpu_count():
            return (
                "no NVIDIA GPU here (none visible to this process: see CUDA_VISIBLE_DEVICES); "
                "TensorRT runs only on NVIDIA GPUs."
            )
        if not is_installed("tensorrt"):
            return "tensorrt is not installed. HINT: pip install tensorrt cuda-python"
        if not is_installed("cuda"):
            return (
                "cuda-python (the CUDA runtime binding TensorRT buffers go through) is not "
                "installed. HINT: pip install cuda-python"
            )
        return None

    def open(
        self,
        adapter: Any,
        path: Path,
        manifest: Manifest,
        *,
        device: str,
        threads: int | None,
    ) -> tuple[Any, int | None]:
        max_batch = manifest.attributes.get("max_batch", 64)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise EvalError(
                f"Model '{manifest.name}': attributes.max_batch must be a positive integer. "
                f"Got {max_batch!r}."
            )
        engine = adapter.open(
            weights_file(path, manifest, SUFFIXES, self.name),
            device=device,
            sample_shape=tuple(manifest.input.shape),
            max_batch=max_batch,
            fp16=manifest.attributes.get("precision") == "fp16",
            cache_dir=_engine_cache(),
        )
        placed: tuple[Any, int | None] = adapter.place(engine, device, threads=threads)
        return placed


def _engine_cache() -> Path:
    """Where engines built from ``.onnx`` files are kept: ``<cache>/tensorrt`` (keyed by the
    model's sha256, the TensorRT version, the GPU and the build options)."""
    from forgeml.store import cache_dir

    return cache_dir() / "tensorrt"


agent = TensorRTAgent()
