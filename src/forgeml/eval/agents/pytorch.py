"""The ``pytorch`` agent (alias ``torch``) and the ``torchscript`` agent.

``pytorch`` runs a ``torch.nn.Module`` from a forgeml archive, or a TorchScript
program when the manifest says ``weights: {format: torchscript}``;
``torchscript`` runs TorchScript programs only (what ``forgeml export --to
torchscript`` registers, as framework ``torchscript``). Modules run in eval mode
under ``torch.inference_mode`` on ``cpu`` or ``cuda:N``; ``threads`` calls
``torch.set_num_threads`` (process-wide).

Loading a TorchScript file runs the program it holds, so it is code, not data:
the agents load one only from a manifest that says it is trusted
(``attributes: {trust: true}``) and pins the file's sha256 (``weights.sha256``,
checked before loading). ``forgeml export`` writes both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError
from forgeml.eval._manifest import Manifest
from forgeml.eval.agents._base import FrameworkAgent

#: The ``weights.format`` of a TorchScript program.
TORCHSCRIPT = "torchscript"


def is_torchscript(manifest: Manifest) -> bool:
    return (manifest.weights.format or "").lower() == TORCHSCRIPT


def check_trusted(manifest: Manifest) -> None:
    """Refuse a TorchScript program unless the manifest trusts it and pins its sha256."""
    trusted = manifest.attributes.get("trust") is True
    pinned = manifest.weights.sha256 is not None or manifest.weights.source == "zoo"
    if trusted and pinned:
        return
    missing = [
        *([] if trusted else ["'trust: true' under attributes"]),
        *([] if pinned else ["the file's sha256 under weights"]),
    ]
    raise EvalError(
        f"Model '{manifest.name}' is a TorchScript program (weights.format: torchscript); "
        f"loading one runs its code, so forgeml loads it only from a manifest that trusts it "
        f"and pins the file. Add {' and '.join(missing)} if you trust the file (forgeml "
        f"export writes both)."
    )


class PyTorchAgent(FrameworkAgent):
    name = "pytorch"
    framework = "pytorch"
    adapter_name = "torch"
    packages = ("torch",)
    runs = "a torch.nn.Module"

    def open(
        self,
        adapter: Any,
        path: Path,
        manifest: Manifest,
        *,
        device: str,
        threads: int | None,
    ) -> tuple[Any, int | None]:
        if not is_torchscript(manifest):
            return super().open(adapter, path, manifest, device=device, threads=threads)
        check_trusted(manifest)
        program = adapter.load_torchscript(path, device=device)
        placed: tuple[Any, int | None] = adapter.place(program, device, threads=threads)
        return placed


class TorchScriptAgent(PyTorchAgent):
    """Runs TorchScript programs (``torch.jit``) of manifests with framework ``torchscript``."""

    name = "torchscript"
    framework = "torchscript"
    runs = "a TorchScript program (weights.format: torchscript)"

    def open(
        self,
        adapter: Any,
        path: Path,
        manifest: Manifest,
        *,
        device: str,
        threads: int | None,
    ) -> tuple[Any, int | None]:
        if manifest.weights.format is None:
            manifest = manifest.with_weights(_with_format(manifest))
        if not is_torchscript(manifest):
            raise EvalError(
                f"The torchscript agent runs TorchScript programs. Model '{manifest.name}' has "
                f"weights.format {manifest.weights.format!r}; use its framework's agent."
            )
        return super().open(adapter, path, manifest, device=device, threads=threads)


def _with_format(manifest: Manifest) -> Any:
    from dataclasses import replace

    return replace(manifest.weights, format=TORCHSCRIPT)


agent = PyTorchAgent()
torchscript_agent = TorchScriptAgent()
