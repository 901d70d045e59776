"""The small protocols framework adapters implement.

An adapter implements the capabilities that make sense for its framework:
seeding (:class:`Seedable`) and saving the state of its objects
(:class:`StateAdapter`). Everything else in forgeml is built on these methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class FrameworkAdapter(Protocol):
    """Every adapter: a registry name and the importable module it wraps."""

    #: the short name in the registry, which is also the module it wraps, e.g. ``"torch"``
    name: str
    #: the importable module the adapter wraps, e.g. ``"torch"``
    module: str


@runtime_checkable
class Seedable(FrameworkAdapter, Protocol):
    def seed(self, seed: int, deterministic: bool = False) -> None:
        """Seed the framework's random generators; optionally turn on deterministic kernels."""
        ...


@runtime_checkable
class StateAdapter(FrameworkAdapter, Protocol):
    """Saves and restores the learned state of a framework's objects, in safe formats only."""

    def owns(self, obj: object) -> bool:
        """True when ``obj`` is an object whose state this adapter saves."""
        ...

    def save_state(self, obj: Any, directory: Path, stem: str) -> dict[str, Any]:
        """Write ``obj``'s state to files named ``stem`` + suffix inside ``directory``.

        Returns JSON-serialisable info that :meth:`load_state` needs, including
        ``"files"``: the names written (relative to ``directory``).
        """
        ...

    def load_state(
        self, obj: Any, directory: Path, info: dict[str, Any], *, trust: bool = False
    ) -> Any:
        """Restore the state saved by :meth:`save_state` into ``obj`` (a freshly built one).

        Returns the object to use: ``obj`` restored in place, or a new object
        where the framework cannot restore in place (e.g. a fitted estimator).
        ``trust`` admits types outside the framework's safe allowlist.
        """
        ...


@runtime_checkable
class InferenceAdapter(FrameworkAdapter, Protocol):
    """Runs a framework's models on a device: what ``forgeml.eval``'s agents are built on.

    Batches go in and come out as numpy arrays. Device names are ``"cpu"`` and
    ``"cuda:N"``. A runtime that loads files rather than objects (ONNX Runtime,
    TensorRT) also has ``open(path, *, device, threads)``, which returns its model.
    """

    def inference_info(self) -> dict[str, str]:
        """``{"framework": ..., "version": ...}`` and what else says what runs the model."""
        ...

    def devices(self) -> list[str]:
        """The devices this framework can run on here, ``"cpu"`` first when it can."""
        ...

    def is_model(self, obj: object) -> bool:
        """True when ``obj`` is a model this adapter can predict with."""
        ...

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """``model`` ready for inference on ``device`` (eval mode, moved there), with
        ``threads`` CPU threads (None: the framework's default).

        Returns the model to predict with and the number of threads in effect
        (None when the framework does not say, or when they could not be set).

        An adapter whose ``threads`` change process-wide settings (torch's thread
        count, the BLAS pools) also has ``thread_state()``: it returns a function
        that sets them back to what they were when it was called. The agents take
        that handle before ``place`` and call it when the predictor is closed.
        """
        ...

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """The model's outputs for a numpy batch, as a numpy array on the CPU.

        An adapter may also have ``predict_function(model, device)``: a one-argument
        function doing the same for that model and device, with what can be decided
        once (device, output kind, conversions) decided then. The agents use it when
        it is there; at batch size 1 a small model's call takes tens of microseconds,
        so a microsecond of per-call checks shows in its throughput.
        """
        ...

    def synchronize(self, device: str) -> None:
        """Wait until ``device`` has finished its queued work (no-op on the CPU)."""
        ...
