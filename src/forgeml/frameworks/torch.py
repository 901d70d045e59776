"""PyTorch adapter: seeding, determinism, process groups, and state of modules and optimizers."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import safetensors
import safetensors.torch
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_path, atomic_write_text
from forgeml.frameworks._state import state_file


class TorchAdapter:
    name = "torch"
    module = "torch"

    def seed(self, seed: int, deterministic: bool = False) -> None:
        torch.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def cuda_initialized(self) -> bool:
        return bool(torch.cuda.is_initialized())

    def device_count(self) -> int:
        return int(torch.cuda.device_count())

    def set_device(self, index: int) -> None:
        torch.cuda.set_device(index)

    # -- forgeml.io: .pt files and torch tensors in .safetensors ----------------------------

    # torch dtype -> (safetensors code, a same-size dtype numpy can view it as, or None)
    _SAFETENSORS_VIEWS: ClassVar[dict[Any, tuple[str, Any]]] = {
        torch.float64: ("F64", None),
        torch.float32: ("F32", None),
        torch.float16: ("F16", None),
        torch.bfloat16: ("BF16", torch.int16),
        torch.float8_e4m3fn: ("F8_E4M3", torch.uint8),
        torch.float8_e5m2: ("F8_E5M2", torch.uint8),
        torch.complex64: ("C64", None),
        torch.int64: ("I64", None),
        torch.int32: ("I32", None),
        torch.int16: ("I16", None),
        torch.int8: ("I8", None),
        torch.uint64: ("U64", None),
        torch.uint32: ("U32", None),
        torch.uint16: ("U16", None),
        torch.uint8: ("U8", None),
        torch.bool: ("BOOL", None),
    }

    def is_tensor(self, obj: object) -> bool:
        """True for a torch tensor."""
        return isinstance(obj, torch.Tensor)

    def save_pt(self, obj: Any, f: Any) -> None:
        """``torch.save(obj, f)`` into a binary stream."""
        torch.save(obj, f)

    def load_pt(self, source: Any, *, trust: bool = False, map_location: Any = None) -> Any:
        """``torch.load`` a path or binary stream, weights only unless ``trust``.

        A file that holds other objects raises :class:`FormatError` saying which
        global was refused and how to proceed.
        """
        import pickle
        import re

        from forgeml._core._errors import FormatError

        try:
            return torch.load(source, map_location=map_location, weights_only=not trust)
        except pickle.UnpicklingError as exc:
            if trust:
                raise
            text = str(exc)
            found = re.search(r"WeightsUnpickler error: (.+?)(?= Please use|\n|$)", text)
            reason = found.group(1).strip() if found else text.strip().splitlines()[0]
            where = f"'{source}'" if isinstance(source, (str, os.PathLike)) else "The data"
            raise FormatError(
                f"{where} holds objects outside torch's weights-only allowlist ({reason}) "
                f"and unpickling them could run arbitrary code. If you trust the file, load it "
                f"with trust=True; better, save only tensors and plain containers (e.g. "
                f"model.state_dict()) or use .safetensors."
            ) from None

    def safetensors_arrays(self, tensors: dict[str, Any]) -> dict[str, tuple[str, Any]] | None:
        """numpy views of ``tensors`` (no copy on the CPU) for forgeml's ``.safetensors`` writer.

        Maps each name to ``(safetensors dtype code, array)``. Returns None when
        :meth:`safetensors_dumps` must write them instead: tensors that share
        memory (which it refuses with an explanation), or a dtype without a view.
        """
        arrays: dict[str, tuple[str, Any]] = {}
        storages: set[int] = set()
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor) or value.dtype not in self._SAFETENSORS_VIEWS:
                return None
            if value.numel():
                storage = value.untyped_storage().data_ptr()
                if storage in storages:
                    return None
                storages.add(storage)
            code, view = self._SAFETENSORS_VIEWS[value.dtype]
            tensor = value if view is None else value.view(view)
            arrays[key] = (code, tensor.numpy(force=True))
        return arrays

    def safetensors_dumps(self, tensors: dict[str, Any], metadata: dict[str, str] | None) -> bytes:
        """Tensors (numpy arrays are converted) as the bytes of a ``.safetensors`` file."""
        import re

        import safetensors.torch

        flat = {
            key: (value if isinstance(value, torch.Tensor) else torch.as_tensor(value))
            .detach()
            .contiguous()
            for key, value in tensors.items()
        }
        try:
            return bytes(safetensors.torch.save(flat, metadata=metadata))
        except RuntimeError as exc:
            if "share memory" not in str(exc):
                raise
            from forgeml._core._errors import FormatError

            groups = re.findall(r"\{[^{}]*\}", str(exc))
            raise FormatError(
                f"Tensors {', '.join(groups) or ''} share memory (tied weights, or views of "
                f"one tensor); .safetensors stores every tensor separately. Save one of each "
                f"group and re-tie after loading, or pass copies (t.clone())."
            ) from None

    def safetensors_load(self, source: Any, *, device: str = "cpu") -> dict[str, Any]:
        """Tensors from a ``.safetensors`` path or its bytes, placed on ``device``."""
        import safetensors.torch

        if isinstance(source, (bytes, bytearray, memoryview)):
            tensors = safetensors.torch.load(bytes(source))
            if device == "cpu":
                return dict(tensors)
            return {key: value.to(device) for key, value in tensors.items()}
        return dict(safetensors.torch.load_file(source, device=device))

    # -- forgeml.data: tensors <-> numpy, torch datasets, and array ops for transforms ------
    # (numpy arrays in and out; forgeml.data calls these through forgeml.data._backend)

    def data_is_tensor(self, obj: object) -> bool:
        return isinstance(obj, torch.Tensor)

    def data_to_numpy(self, tensor: Any) -> Any:
        """A numpy copy-or-view of ``tensor`` on the CPU, with the same dtype."""
        if tensor.dtype not in _NUMPY_DTYPES:
            from forgeml._core._errors import DataError

            raise DataError(
                f"A torch tensor of dtype {tensor.dtype} has no numpy equivalent. Cast it "
                f"first, e.g. .map_el(lambda x: x.float()), or keep the dataset in torch."
            )
        return tensor.detach().numpy(force=True)

    def data_from_numpy(self, array: Any) -> Any:
        """A tensor copied from a numpy array or scalar, with the same dtype."""
        import numpy as np

        array = np.asarray(array)
        if array.dtype.kind not in "biufc":
            from forgeml._core._errors import DataError

            raise DataError(
                f"torch cannot hold a numpy array of dtype {array.dtype} (shape "
                f"{array.shape}). Only booleans and numbers become tensors; drop or encode "
                f"that leaf (e.g. map strings to ids) before .torch()."
            )
        return torch.from_numpy(np.array(array, copy=True, order="C"))

    def data_stack(self, tensors: list[Any]) -> Any:
        return torch.stack(tensors)

    def data_dataset_kind(self, obj: object) -> str | None:
        """ "loader" (a DataLoader), "iterable" (an IterableDataset), "map" or None."""
        data = torch.utils.data
        if isinstance(obj, data.DataLoader):
            return "loader"
        if isinstance(obj, data.IterableDataset):
            return "iterable"
        if isinstance(obj, data.Dataset):
            return "map"
        return None

    def data_loader_batched(self, loader: Any) -> bool:
        """True when a DataLoader collates samples into batches (automatic batching)."""
        return loader.batch_sampler is not None

    def data_register_iterable(self, cls: type) -> None:
        """Make ``isinstance(obj, IterableDataset)`` true for ``cls``, so DataLoader iterates it."""
        torch.utils.data.IterableDataset.register(cls)

    def data_worker_info(self) -> tuple[int, int] | None:
        """``(worker id, number of workers)`` inside a DataLoader worker, else None."""
        info = torch.utils.data.get_worker_info()
        return None if info is None else (int(info.id), int(info.num_workers))

    def data_take(self, tensor: Any, indices: Any, axis: int) -> Any:
        index = torch.from_numpy(indices).to(device=tensor.device, dtype=torch.int64)
        return torch.index_select(tensor, axis, index)

    def data_flip(self, tensor: Any, axis: int) -> Any:
        return torch.flip(tensor, (axis,))

    def data_constant(self, values: Any, like: Any) -> Any:
        return torch.tensor(values, dtype=like.dtype, device=like.device)  # a copy

    def data_dtype_name(self, tensor: Any) -> str:
        return str(tensor.dtype).removeprefix("torch.")

    def data_cast(self, tensor: Any, dtype: str) -> Any:
        target = getattr(torch, dtype, None)
        if not isinstance(target, torch.dtype):
            from forgeml._core._errors import DataError

            raise DataError(
                f"torch has no dtype {dtype!r}. Use a torch dtype name such as 'float32', "
                f"'float16', 'int64', 'uint8' or 'bool'."
            )
        return tensor.to(target)

    def data_is_floating(self, tensor: Any) -> bool:
        return bool(tensor.is_floating_point())

    def data_int_range(self, tensor: Any) -> tuple[int, int]:
        if tensor.dtype == torch.bool:
            return 0, 1
        info = torch.iinfo(tensor.dtype)
        return int(info.min), int(info.max)

    # -- end of forgeml.data ------------------------------------------------------------------

    def init_process_group(
        self, *, backend: str, init_method: str, rank: int, world_size: int
    ) -> None:
        dist.init_process_group(
            backend=backend, init_method=init_method, rank=rank, world_size=world_size
        )

    def destroy_process_group(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def spawn(self, fn: Callable[..., Any], args: tuple[Any, ...], nprocs: int) -> None:
        """Run ``fn(local_rank, *args)`` in ``nprocs`` processes; one failure stops them all.

        Raises :class:`WorkerFailed` with the failing worker's traceback.
        """
        try:
            mp.start_processes(fn, args=args, nprocs=nprocs, join=True, start_method="spawn")
        except mp.ProcessRaisedException as exc:
            raise WorkerFailed(exc.error_index, str(exc)) from None
        except mp.ProcessExitedException as exc:
            raise WorkerFailed(exc.error_index, str(exc), exit_code=exc.exit_code) from None

    # -- forgeml.eval: inference (devices, threads, predict on a batch) ----------------------
    # (numpy batches in and out; forgeml.eval's pytorch agent calls these)

    def inference_info(self) -> dict[str, str]:
        return {"framework": "torch", "version": str(torch.__version__)}

    def devices(self) -> list[str]:
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def is_model(self, obj: object) -> bool:
        """True for ``torch.nn.Module`` (an optimizer is state, not a model)."""
        return isinstance(obj, torch.nn.Module)

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The module in eval mode (dropout off, batch norm frozen) on ``device``.

        ``threads`` calls ``torch.set_num_threads`` (process-wide: every model's
        intra-op threads).
        """
        if threads is not None:
            self.set_threads(threads)
        return model.eval().to(device), int(torch.get_num_threads())

    def session(self, device: str) -> Any:
        """A context to hold around many predict calls (inference mode, entered once)."""
        return torch.inference_mode()

    def set_threads(self, threads: int) -> int | None:
        """``torch.set_num_threads``; returns the intra-op threads in effect."""
        torch.set_num_threads(threads)
        return int(torch.get_num_threads())

    def thread_state(self) -> Callable[[], None]:
        """A function that sets torch's intra-op threads back to what they are now."""
        threads = int(torch.get_num_threads())
        return lambda: torch.set_num_threads(threads)

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """``model(batch)`` under ``torch.inference_mode``; the first output when it returns
        several (a tuple, or a dict: ``"logits"`` or its first value)."""
        import numpy as np

        array = np.asarray(batch)
        if not (array.flags.c_contiguous and array.flags.writeable):
            array = np.array(array, order="C")
        # Inside session() inference mode is already on: entering it again costs µs a batch.
        mode = (
            contextlib.nullcontext()
            if torch.is_inference_mode_enabled()
            else torch.inference_mode()
        )
        with mode:
            x = torch.from_numpy(array)
            if device != "cpu":
                x = x.to(device, non_blocking=True)
            out = model(x)
            if isinstance(out, dict):
                out = out["logits"] if "logits" in out else next(iter(out.values()))
            elif isinstance(out, tuple | list):
                out = out[0]
            return out.detach().cpu().numpy()  # .cpu() waits for the device

    def predict_function(self, model: Any, device: str) -> Callable[[Any], Any]:
        """:meth:`predict` for one model and device. On the CPU, inside :meth:`session`
        (inference mode on), a contiguous writable float array goes straight through
        ``torch.from_numpy`` and a plain tensor output straight to ``.numpy()``; anything
        else takes :meth:`predict`'s general path."""
        import numpy as np

        if device != "cpu":
            return lambda batch: self.predict(model, batch, device)
        general = self.predict
        from_numpy = torch.from_numpy
        inference = torch.is_inference_mode_enabled
        ndarray, tensor = np.ndarray, torch.Tensor

        def predict(batch: Any) -> Any:
            if type(batch) is not ndarray or not inference():
                return general(model, batch, device)
            flags = batch.flags
            if not (flags.c_contiguous and flags.writeable):
                return general(model, batch, device)
            out = model(from_numpy(batch))
            if type(out) is not tensor:
                return general(model, batch, device)
            return out.numpy()

        return predict

    def synchronize(self, device: str) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    def load_torchscript(self, path: str | os.PathLike[str], device: str = "cpu") -> Any:
        """The TorchScript program in ``path`` (``torch.jit.load``), on ``device``.

        Loading a TorchScript file runs its code: load only files you trust (the
        agents require a trusted manifest that pins the file's sha256).
        """
        try:
            with _quiet_torchscript():
                program = torch.jit.load(os.fspath(path), map_location=device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ObjectError(f"torch cannot load the TorchScript file {path}: {exc}") from exc
        return program.eval()

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.export: TorchScript and ONNX ------------------------------------------------

    def export_torchscript(
        self, model: Any, sample: Any, path: Path, *, method: str = "trace", fp16: bool = False
    ) -> dict[str, Any]:
        """Write ``model`` as a TorchScript program to ``path``: traced on ``sample`` (a numpy
        batch) or scripted (``method="script"``, which keeps data-dependent control flow).

        ``fp16`` converts the weights to half precision; the program still takes and
        returns float32 (it casts at its edges).
        """
        import copy

        import numpy as np

        module = model.eval()
        if fp16:
            module = _HalfPrecision(copy.deepcopy(module).half())
        example = torch.from_numpy(np.ascontiguousarray(sample))
        example = example.to(next(iter(module.parameters()), example).device)
        with _quiet_torchscript(), torch.no_grad():
            if method == "script":
                program = torch.jit.script(module)
            else:
                program = torch.jit.trace(module, (example,))
        program.save(os.fspath(path))
        return {"method": method, "torch": str(torch.__version__)}

    def export_onnx(
        self,
        model: Any,
        sample: Any,
        path: Path,
        *,
        opset: int = 17,
        dynamic_batch: bool = True,
        input_name: str = "input",
        output_name: str = "output",
    ) -> dict[str, Any]:
        """Write ``model`` to ``path`` as one self-contained ONNX file, traced on ``sample``.

        Uses the TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``
        and keeps the weights inside the file. ``dynamic_batch`` makes the first axis
        of the input and output a named dimension, ``batch``.
        """
        import numpy as np

        module = model.eval()
        example = torch.from_numpy(np.ascontiguousarray(sample))
        example = example.to(next(iter(module.parameters()), example).device)
        axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
        with _quiet_torchscript(), torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                os.fspath(path),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes=axes,
            )
        return {"opset": opset, "torch": str(torch.__version__)}

    # -- end of forgeml.export --------------------------------------------------------------

    # --- state: save_state / load_state (safetensors + JSON, never pickle) ---

    def owns(self, obj: object) -> bool:
        """True for modules (``torch.nn.Module``) and optimizers (``torch.optim.Optimizer``)."""
        return isinstance(obj, torch.nn.Module | torch.optim.Optimizer)

    def save_state(self, obj: Any, directory: Path, stem: str) -> dict[str, Any]:
        """Save a module's ``state_dict()`` or an optimizer's state; never pickles.

        A module writes ``<stem>.safetensors``: parameters and persistent buffers
        (non-persistent buffers are not state; ``__init__`` rebuilds them). A
        tensor held under several names (tied weights) is stored once. An
        optimizer writes its tensors to ``<stem>.safetensors`` and the rest of
        its ``state_dict()`` (param groups, step counts, hyperparameters) to
        ``<stem>.json``.
        """
        directory = Path(directory)
        if isinstance(obj, torch.nn.Module):
            return _save_module(obj, directory, stem)
        if isinstance(obj, torch.optim.Optimizer):
            return _save_optimizer(obj, directory, stem)
        raise ObjectError(
            f"The torch adapter saves torch.nn.Module and torch.optim.Optimizer objects. "
            f"Got {type(obj).__qualname__}."
        )

    def load_state(
        self, obj: Any, directory: Path, info: dict[str, Any], *, trust: bool = False
    ) -> Any:
        """Load the state saved by :meth:`save_state` into ``obj`` in place; returns ``obj``.

        Tensors are read to the CPU and copied into ``obj``'s own tensors, so they
        keep their device. A module is loaded with ``strict=True``: every saved
        name must fit and every name of ``obj`` must be saved. ``trust`` changes
        nothing: the files hold only tensors and JSON.
        """
        directory = Path(directory)
        kind = info.get("format")
        expected = {_MODULE_FORMAT: torch.nn.Module, _OPTIMIZER_FORMAT: torch.optim.Optimizer}
        if kind not in expected:
            raise ObjectError(
                f"The torch adapter cannot load state of format {kind!r}. Known formats: "
                f"{', '.join(sorted(expected))}. Was it saved by another adapter?"
            )
        if not isinstance(obj, expected[kind]):
            raise ObjectError(
                f"The saved state is a {expected[kind].__module__}.{expected[kind].__name__} "
                f"state ({kind}), but the object to load it into is a "
                f"{type(obj).__qualname__}. Load it into the object it was saved from."
            )
        if kind == _MODULE_FORMAT:
            _load_module(obj, directory, info)
        else:
            _load_optimizer(obj, directory, info)
        return obj

    # -- forgeml.context: limits in a compute context's process --------------------------------

    def context_configure(self, gpus: dict[int, float], memory_mb: dict[int, int]) -> None:
        """Limit torch to its share of each visible CUDA device, before it allocates there.

        ``gpus`` maps a visible device's index (as torch numbers it) to the share of
        its memory torch may use; visible devices missing from it get 0 (every
        allocation there fails). ``memory_mb`` is unused: torch takes a fraction.
        A process without CUDA devices has nothing to limit.
        """
        del memory_mb
        if not torch.cuda.is_available():
            return
        for index in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(float(gpus.get(index, 0.0)), index)

    def context_memory_fraction(self, index: int) -> float:
        """The memory fraction set for CUDA device ``index`` (1.0 when none was set)."""
        return float(torch.cuda.get_per_process_memory_fraction(index))

    # -- end of forgeml.context ---------------------------------------------------------------


# --- forgeml.data helpers (see TorchAdapter.data_to_numpy) ---

# torch dtypes numpy represents exactly (bfloat16 and the float8 types have no numpy dtype)
_NUMPY_DTYPES = frozenset(
    {
        torch.float64,
        torch.float32,
        torch.float16,
        torch.complex64,
        torch.complex128,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint64,
        torch.uint32,
        torch.uint16,
        torch.uint8,
        torch.bool,
    }
)


# --- forgeml.export helpers (see TorchAdapter.export_torchscript) ---


class _HalfPrecision(torch.nn.Module):  # type: ignore[misc]
    """A half-precision module behind float32 edges: casts inputs to half, outputs to float."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x.half())
        return out.float()


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """Hide torch's notices that TorchScript (and the exporter built on it) is deprecated."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        yield


class WorkerFailed(Exception):
    def __init__(self, rank: int, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code


# --- state helpers (see TorchAdapter.save_state) ---

_MODULE_FORMAT = "torch.module.safetensors"
_OPTIMIZER_FORMAT = "torch.optimizer.safetensors+json"
_HEADER_KEY = "forgeml"  # safetensors metadata entry holding forgeml's JSON header


def _save_module(module: Any, directory: Path, stem: str) -> dict[str, Any]:
    state = module.state_dict()
    tensors: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        else:  # the value of a module's get_extra_state()
            extra[key] = value
    own = set(tensors)
    encoded_extra = {key: _encode(value, (key,), tensors) for key, value in extra.items()}
    stored, aliases = _storable(tensors)
    versions = {
        prefix: {k: v for k, v in meta.items() if v is None or isinstance(v, bool | int | str)}
        for prefix, meta in getattr(state, "_metadata", {}).items()
    }
    header = {
        "aliases": aliases,
        "extra": encoded_extra,
        "extra_tensors": sorted(set(tensors) - own),
        "versions": versions,
    }
    name = f"{stem}.safetensors"
    _write_safetensors(stored, directory / name, _MODULE_FORMAT, header)
    return {
        "format": _MODULE_FORMAT,
        "files": [name],
        "class": f"{type(module).__module__}:{type(module).__qualname__}",
        "tensors": len(stored),
        "aliases": len(aliases),
    }


def _load_module(module: Any, directory: Path, info: dict[str, Any]) -> None:
    path = state_file("torch", directory, info, ".safetensors")
    tensors, header = _read_safetensors(path)
    state: collections.OrderedDict[str, Any] = collections.OrderedDict(tensors)
    try:
        for name in header.get("extra_tensors", []):  # they belong to an extra state below
            del state[name]
        for key, encoded in header.get("extra", {}).items():
            state[key] = _decode(encoded, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ObjectError(f"{path} has a damaged forgeml header: {exc!r}.") from exc
    state._metadata = header.get("versions", {})  # type: ignore[attr-defined]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ObjectError(
            f"The state in {path} does not fit {type(module).__qualname__} "
            f"(saved from {info.get('class', '?')}): {exc}\nHINT: build the module with the "
            f"same constructor arguments as the one that was saved."
        ) from exc


def _save_optimizer(optimizer: Any, directory: Path, stem: str) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    structure = _encode(optimizer.state_dict(), (), tensors)
    stored, aliases = _storable(tensors)
    names = [f"{stem}.safetensors", f"{stem}.json"]
    _write_safetensors(stored, directory / names[0], _OPTIMIZER_FORMAT, {"aliases": aliases})
    document = {"format": _OPTIMIZER_FORMAT, "state_dict": structure}
    atomic_write_text(directory / names[1], json.dumps(document, indent=1, allow_nan=False))
    return {
        "format": _OPTIMIZER_FORMAT,
        "files": names,
        "class": f"{type(optimizer).__module__}:{type(optimizer).__qualname__}",
        "tensors": len(stored),
    }


def _load_optimizer(optimizer: Any, directory: Path, info: dict[str, Any]) -> None:
    tensors, _ = _read_safetensors(state_file("torch", directory, info, ".safetensors"))
    path = state_file("torch", directory, info, ".json")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        state = _decode(document["state_dict"], tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ObjectError(f"{path} is not a forgeml optimizer state file: {exc!r}.") from exc
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ObjectError(
            f"The optimizer state in {path} does not fit {type(optimizer).__qualname__} "
            f"(saved from {info.get('class', '?')}): {exc}\nHINT: build the optimizer over "
            f"the same parameters, in the same groups, as the one that was saved."
        ) from exc


def _storable(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors safetensors accepts, plus ``{alias: stored name}`` for tied tensors.

    safetensors refuses tensors that share memory: a tensor held under several
    names (tied weights) is stored once and its other names become aliases;
    other tensors overlapping a stored one (views) are stored as copies.
    """
    stored: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    for name, value in tensors.items():
        tensor = value.detach()
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            what = "on the meta device" if tensor.is_meta else f"a {tensor.layout} tensor"
            raise ObjectError(
                f"The tensor '{name}' is {what}, which cannot be saved. "
                f"Materialise it as a dense tensor before saving."
            )
        if tensor.numel() == 0:
            stored[name] = tensor.contiguous()
            continue
        view = (
            str(tensor.device),
            tensor.dtype,
            tensor.data_ptr(),
            *tensor.shape,
            *tensor.stride(),
        )
        if view in views:
            aliases[name] = views[view]
            continue
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if storage in storages:
            stored[name] = tensor.clone(memory_format=torch.contiguous_format)
        else:
            stored[name] = tensor.contiguous()
        storages.add(storage)
        views[view] = name
    return stored, aliases


def _write_safetensors(
    tensors: dict[str, Any], path: Path, kind: str, header: dict[str, Any]
) -> None:
    metadata = {"format": "pt", "forgeml.format": kind, _HEADER_KEY: json.dumps(header)}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        header = json.loads(metadata.get(_HEADER_KEY, "{}"))
        for alias, name in header.get("aliases", {}).items():
            tensors[alias] = tensors[name]
    except (OSError, ValueError, KeyError, AttributeError, safetensors.SafetensorError) as exc:
        raise ObjectError(f"Cannot read the torch state file {path}: {exc!r}") from exc
    return tensors, header


def _encode(value: Any, path: tuple[str, ...], tensors: dict[str, Any]) -> Any:
    """``value`` as JSON, its tensors moved to ``tensors`` under their path."""
    if isinstance(value, torch.Tensor):
        key = "/".join(path) or "tensor"
        while key in tensors:
            key += "'"
        tensors[key] = value
        return {"__tensor__": key}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, list):
        return [_encode(item, (*path, str(i)), tensors) for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, (*path, str(i)), tensors) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, (*path, k), tensors) for k, v in value.items()}
        return {
            "__dict__": [
                [_encode(k, (*path, "key"), tensors), _encode(v, (*path, str(k)), tensors)]
                for k, v in value.items()
            ]
        }
    raise ObjectError(
        f"The torch state at '{'/'.join(path)}' is a {type(value).__qualname__}, which forgeml "
        f"cannot save without pickle. State may hold tensors, None, bool, int, float, str and "
        f"lists, tuples and dicts of those. HINT: convert it in get_extra_state()/state_dict()."
    )


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "__tensor__":
            return tensors[inner]
        if tag == "__tuple__":
            return tuple(_decode(item, tensors) for item in inner)
        if tag == "__dict__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in inner}
        if tag == "__float__":
            return float(inner)
    return {k: _decode(v, tensors) for k, v in value.items()}


adapter = TorchAdapter()
