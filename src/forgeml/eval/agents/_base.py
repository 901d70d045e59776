"""What the framework agents share: checks, weights, devices, threads, and the predictor.

An agent is a thin layer over a framework adapter (``forgeml.frameworks``,
:class:`~forgeml.frameworks.InferenceAdapter`): the adapter knows how to place a
model on a device and predict on a batch; the agent checks the manifest,
resolves its weights, loads them and hands back a :class:`AdapterPredictor`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError, ForgeMLError, RegistryError
from forgeml._core._lazy import is_installed
from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import Predictor

_DEVICE = re.compile(r"^(?:(?P<cpu>cpu)(?::0)?|(?:cuda|gpu)(?::(?P<index>\d+))?)$")


def normalize_device(device: str) -> str:
    """``"cpu"``, ``"cuda"``/``"gpu"`` (GPU 0), ``"cuda:N"``/``"gpu:N"`` -> its canonical name.

    The one parser of device names (the runner's ``architecture`` uses it too).
    """
    match = _DEVICE.match(str(device).strip().lower())
    if match is None:
        raise EvalError(f"A device is 'cpu' or 'cuda:N' (N: the GPU's index). Got {device!r}.")
    if match.group("cpu"):
        return "cpu"
    return f"cuda:{int(match.group('index') or 0)}"


def device_index(device: str) -> int | None:
    """The GPU index of a canonical device name (``"cuda:1"`` -> 1); None for ``"cpu"``."""
    head, _, index = device.partition(":")
    return int(index or 0) if head == "cuda" else None


def check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EvalError(f"threads must be a positive integer (or None). Got {threads!r}.")
    return threads


def allowed_modules(
    manifest: Manifest, defaults: Iterable[str] = ("forgeml.",)
) -> tuple[str, ...] | None:
    """The module prefixes the classes of a manifest's weights may come from.

    ``attributes.allow`` when the manifest has it. Otherwise weights from a local
    ``path`` or the ``zoo`` may name any importable module (None), as models
    saved by users live in their own packages; weights fetched from a ``url`` or
    read from a ``repo`` only ``defaults`` (forgeml's and the framework's own
    packages): name the others in ``attributes.allow`` to widen it.
    """
    allow = manifest.attributes.get("allow")
    if allow is None:
        return tuple(defaults) if manifest.weights.source in ("url", "repo") else None
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, list | tuple) or not all(isinstance(a, str) and a for a in allow):
        raise EvalError(
            f"Model '{manifest.name}': attributes.allow must be a list of module prefixes "
            f"(e.g. [forgeml., mypackage.]). Got {allow!r}."
        )
    return tuple(allow)


class AdapterPredictor:
    """A model loaded by a framework adapter, on one device (a :class:`Predictor`)."""

    def __init__(
        self,
        adapter: Any,
        model: Any,
        device: str,
        info: Mapping[str, str],
        *,
        restore: Callable[[], None] | None = None,
    ) -> None:
        self.info: Mapping[str, str] = dict(info)
        self.adapter = adapter
        self.model = model
        self.device = device
        #: The model's outputs for a numpy batch (a numpy array): the adapter's
        #: ``predict_function`` for this model and device when it has one, else its
        #: ``predict``. An attribute, not a method: the runner calls it once a batch.
        self.predict: Callable[[np.ndarray], np.ndarray] = self._predict_function()
        #: Puts back the process-wide thread settings that loading changed (see close).
        self._restore = restore

    def _predict_function(self) -> Callable[[np.ndarray], np.ndarray]:
        adapter, model, device = self.adapter, self.model, self.device
        specialised = getattr(adapter, "predict_function", None)
        if specialised is not None:
            function: Callable[[np.ndarray], np.ndarray] = specialised(model, device)
            return function
        general = adapter.predict
        return lambda batch: general(model, batch, device)

    def _closed(self, batch: np.ndarray) -> np.ndarray:
        raise EvalError(f"This {self.info.get('framework', '')} predictor is closed.")

    def synchronize(self) -> None:
        self.adapter.synchronize(self.device)

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """A context the runner holds open around all predict calls (see the adapter's)."""
        session = getattr(self.adapter, "session", None)
        if session is None:
            return contextlib.nullcontext()
        context: contextlib.AbstractContextManager[Any] = session(self.device)
        return context

    def close(self) -> None:
        """Release the model and put the process's thread settings back as they were."""
        try:
            if self.model is not None and hasattr(self.adapter, "close"):
                self.adapter.close(self.model)
        finally:
            self.model = None
            self.predict = self._closed
            restore, self._restore = self._restore, None
            if restore is not None:
                restore()

    def __repr__(self) -> str:
        described = ", ".join(f"{k}={v}" for k, v in self.info.items())
        return f"{type(self).__name__}({described})"


class FrameworkAgent:
    """An agent over one framework adapter; subclasses set the class attributes.

    :meth:`load` checks the manifest's framework, the device and threads,
    resolves the weights (``forgeml.eval._weights.resolve_weights``), opens
    them with :meth:`open` and returns an :class:`AdapterPredictor`. The
    default :meth:`open` loads a forgeml object archive (``load_object``) and
    runs the object itself, or its ``.model`` attribute, when the adapter says
    it is a model (:meth:`find_model`).
    """

    #: the registry name, e.g. ``"pytorch"``
    name: str = ""
    #: the manifest framework it runs (see ``forgeml.eval.FRAMEWORK_NAMES``)
    framework: str = ""
    #: the ``forgeml.frameworks`` adapter it runs models with
    adapter_name: str = ""
    #: packages that must be importable (install hint: the agent registry's)
    packages: tuple[str, ...] = ()
    #: what it runs, for error messages: "a torch.nn.Module"
    runs: str = ""

    def unavailable(self) -> str | None:
        missing = [p for p in self.packages if not is_installed(p)]
        if not missing:
            return None
        verb = "is" if len(missing) == 1 else "are"
        return f"{', '.join(missing)} {verb} not installed.{self.hint()}"

    def trusted_modules(self) -> tuple[str, ...]:
        """The module prefixes url and repo weights may load classes from by default:
        forgeml's and this framework's packages (``attributes.allow`` widens it)."""
        return ("forgeml.", *(f"{package}." for package in self.packages))

    def hint(self) -> str:
        from forgeml.eval._registries import AGENTS

        try:
            text = AGENTS.entry(self.name).hint
        except RegistryError:
            text = ""
        return f" HINT: {text}" if text else ""

    def adapter(self) -> Any:
        from forgeml.frameworks import get_adapter

        return get_adapter(self.adapter_name)

    def load(
        self, manifest: Manifest, *, device: str = "cpu", threads: int | None = None
    ) -> Predictor:
        """Load the manifest's weights (resolved and verified) onto ``device``."""
        self.check_manifest(manifest)
        threads = check_threads(threads)
        device = normalize_device(device)
        reason = self.unavailable()
        if reason is not None:
            raise EvalError(f"The {self.name} agent cannot run here: {reason}")
        adapter = self.adapter()
        devices = adapter.devices()
        if device not in devices:
            raise EvalError(
                f"Device '{device}' is not available to the {self.name} agent here. "
                f"Available: {', '.join(devices) or '(none)'}."
            )
        path = self.weights(manifest)
        # ``threads`` may change process-wide settings (torch, BLAS pools): the
        # predictor puts them back when it is closed.
        saver = getattr(adapter, "thread_state", None) if threads is not None else None
        restore: Callable[[], None] | None = saver() if saver is not None else None
        with contextlib.ExitStack() as undo:  # restored at once when loading fails
            if restore is not None:
                undo.callback(restore)
            try:
                model, in_effect = self.open(
                    adapter, path, manifest, device=device, threads=threads
                )
            except EvalError:
                raise
            except ForgeMLError as exc:
                raise EvalError(f"Cannot load model '{manifest.name}' from {path}: {exc}") from exc
            undo.pop_all()
        info = {
            **adapter.inference_info(),
            "agent": self.name,
            "device": device,
            "threads": str(in_effect) if in_effect is not None else "default",
        }
        return AdapterPredictor(adapter, model, device, info, restore=restore)

    def check_manifest(self, manifest: Manifest) -> None:
        if manifest.framework != self.framework:
            raise EvalError(
                f"Model '{manifest.name}' is a {manifest.framework} model; the {self.name} "
                f"agent runs {self.framework} models. Use the {manifest.framework} agent, or "
                f"export the model to this framework first."
            )

    def weights(self, manifest: Manifest) -> Path:
        """The local file of the manifest's weights (downloaded and verified when remote)."""
        from forgeml.eval._weights import resolve_weights

        return Path(resolve_weights(manifest))

    def open(
        self,
        adapter: Any,
        path: Path,
        manifest: Manifest,
        *,
        device: str,
        threads: int | None,
    ) -> tuple[Any, int | None]:
        """The model ready on ``device`` and the threads in effect (adapter's ``place``)."""
        from forgeml.objects import load_object

        obj = load_object(path, allow=allowed_modules(manifest, self.trusted_modules()))
        model = self.find_model(adapter, obj, manifest, path)
        placed: tuple[Any, int | None] = adapter.place(model, device, threads=threads)
        return placed

    def find_model(self, adapter: Any, obj: Any, manifest: Manifest, path: Path) -> Any:
        """``obj`` when it is a model of this framework, else its ``.model`` when that is."""
        if adapter.is_model(obj):
            return obj
        inner = getattr(obj, "model", None)
        if inner is not None and adapter.is_model(inner):
            return inner
        cls = type(obj)
        raise EvalError(
            f"The weights of model '{manifest.name}' ({path}) hold a "
            f"{cls.__module__}.{cls.__qualname__}, which the {self.name} agent cannot run: it "
            f"runs {self.runs}, saved as the object itself or as its .model attribute. "
            f"Check the manifest's framework ({manifest.framework})."
        )

    def __repr__(self) -> str:
        return f"<{self.name} agent ({self.framework})>"


def weights_file(path: Path, manifest: Manifest, suffixes: tuple[str, ...], agent: str) -> Path:
    """``path``, checked to be one of ``suffixes`` (or named so by ``weights.format``)."""
    fmt = (manifest.weights.format or "").lower()
    if path.suffix.lower() in suffixes or f".{fmt}" in suffixes:
        return path
    raise EvalError(
        f"The {agent} agent loads {' or '.join(suffixes)} files. Model '{manifest.name}' has "
        f"weights {os.fspath(path)}. Export the model first (forgeml export), or run it with "
        f"the agent of its framework."
    )
