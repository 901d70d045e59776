"""The ``onnxruntime`` agent (aliases ``onnx``, ``ort``): an ``.onnx`` file in an inference session.

The session uses the ``CPUExecutionProvider``, or the ``CUDAExecutionProvider``
(with the CPU one as fallback) for ``cuda:N`` when onnxruntime-gpu is installed.
``threads`` sets the session's ``intra_op_num_threads``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml.eval._manifest import Manifest
from forgeml.eval.agents._base import FrameworkAgent, weights_file


class OnnxRuntimeAgent(FrameworkAgent):
    name = "onnxruntime"
    framework = "onnxruntime"
    adapter_name = "onnxruntime"
    packages = ("onnxruntime",)
    runs = "an .onnx file"

    def open(
        self,
        adapter: Any,
        path: Path,
        manifest: Manifest,
        *,
        device: str,
        threads: int | None,
    ) -> tuple[Any, int | None]:
        session = adapter.open(
            weights_file(path, manifest, (".onnx",), self.name), device=device, threads=threads
        )
        placed: tuple[Any, int | None] = adapter.place(session, device, threads=threads)
        return placed


agent = OnnxRuntimeAgent()
