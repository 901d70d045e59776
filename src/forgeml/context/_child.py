"""The child process of a compute context: dies with its parent, applies the limits, runs.

The parent starts ``python -m forgeml.context._main WORKDIR`` (a fresh
interpreter, like multiprocessing's "spawn", with the environment made for it)
after writing ``call.json`` (the function's import path, its encoded
arguments, the allocation) into a private temp folder; the child reads it,
runs the function and writes ``result.json`` (the encoded return value, or the
exception's type, message and formatted traceback) next to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
import warnings
from pathlib import Path
from typing import Any

from forgeml._core import _errors
from forgeml._core._errors import ContextError
from forgeml._core._files import atomic_write_text
from forgeml.context._requests import DEFAULT, Allocation
from forgeml.context._transport import Transport

CALL = "call.json"
RESULT = "result.json"
#: How often the watchdog thread checks that the parent is alive (seconds).
WATCHDOG_INTERVAL = 0.25
#: The attribute of a compute_context wrapper that holds the function it wraps.
WRAPPED = "__forgeml_context__"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends: the kernel's parent-death signal on
    Linux, and everywhere a watchdog thread that polls the parent's pid."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(70)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="forgeml-context-watchdog", daemon=True).start()


def resolve(path: str, main_path: str | None = None) -> Any:
    """The function ``"module:qual.name"`` (unwrapped from its compute_context wrapper).

    A function of the parent's ``__main__`` script is found by running that script
    as ``__mp_main__`` (as multiprocessing does): its top level must be guarded by
    ``if __name__ == "__main__":``.
    """
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any
        if module_name == "__main__" and main_path:
            obj = types.SimpleNamespace(**runpy.run_path(main_path, run_name="__mp_main__"))
        else:
            obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ContextError(
            f"The compute context cannot find the function {path!r} in its process: {exc}. "
            f"Define the function at the top level of an importable module (a script's "
            f"functions are found only when it runs as `python script.py` with an "
            f"`if __name__ == '__main__':` guard)."
        ) from None
    return getattr(obj, WRAPPED, obj)


def gpu_memory_mb(gpu_ids: list[str]) -> dict[int, int]:
    """Total memory (MiB) of each GPU, by its index in ``gpu_ids``, read through NVML.

    Devices NVML cannot read are left out (the frameworks then grow memory as needed).
    """
    sizes: dict[int, int] = {}
    try:
        import pynvml  # type: ignore[import-untyped,import-not-found,unused-ignore]

        pynvml.nvmlInit()
    except Exception:
        return sizes
    try:
        for index, gpu_id in enumerate(gpu_ids):
            with contextlib.suppress(Exception):
                handle = (
                    pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
                    if gpu_id.isdigit()
                    else pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
                )
                sizes[index] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // 2**20
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return sizes


def apply_limits(
    allocation: Allocation, gpu_ids: list[str], cpu_ids: list[int] | None = None
) -> None:
    """Pin this process to its CPUs and its GPUs, and limit each framework to its share.

    ``gpu_ids`` are the CUDA ids of the granted GPUs, in pool order: the GPUs the
    frameworks number 0, 1, ... in this process. ``cpu_ids`` are the OS ids of the
    granted CPUs (the parent maps pool index i to the i-th CPU of its affinity;
    None: mapped here the same way, from this process's affinity).
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    if cpu_ids is None:
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu_ids = [affinity[i] for i in sorted(allocation.cpus) if i < len(affinity)]
    if cpu_ids and hasattr(os, "sched_setaffinity"):
        usable = set(cpu_ids) & os.sched_getaffinity(0)
        if usable:
            os.sched_setaffinity(0, usable)
    if not gpu_ids:
        return  # no device to limit: no framework needs importing
    from forgeml.frameworks import get_adapter

    local = {pool_index: i for i, pool_index in enumerate(sorted(allocation.gpus))}
    memory = gpu_memory_mb(gpu_ids)
    for name in allocation.frameworks:
        if name == DEFAULT:
            continue
        adapter: Any = get_adapter(name)
        configure = getattr(adapter, "context_configure", None)
        if configure is None:
            continue
        shares = {local[i]: share for i, share in allocation.shares(name).items()}
        try:
            configure(shares, memory)
        except RuntimeError as exc:
            warnings.warn(
                f"Could not limit {name} to its GPU share in this compute context: {exc}. "
                f"It had started before the context applied its limits.",
                RuntimeWarning,
                stacklevel=2,
            )


def _error_record(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    forgeml_error = None
    if cls.__module__ == "forgeml" and getattr(_errors, cls.__name__, None) is cls:
        forgeml_error = cls.__name__
    return {
        "ok": False,
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "forgeml_error": forgeml_error,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def child_main(workdir: str) -> None:
    """The child's entry point: run the call described in ``workdir``."""
    from forgeml.context import _context

    root = Path(workdir)
    call = json.loads((root / CALL).read_text(encoding="utf-8"))
    die_with_parent(int(call["parent_pid"]))
    sys.path[:] = [str(p) for p in call["sys_path"]]
    try:
        allocation = Allocation.from_dict(call["allocation"])
        cpu_ids = call.get("cpu_ids")
        apply_limits(
            allocation,
            list(call["gpu_ids"]),
            None if cpu_ids is None else [int(c) for c in cpu_ids],
        )
        _context.set_active(allocation)
        trust = bool(call["trust"])
        inbound = Transport(root / "in", trust=trust)
        args = inbound.load(call["args"])
        kwargs = inbound.load(call["kwargs"])
        function = resolve(call["function"], call.get("main_path"))
        value = function(*args, **kwargs)
        record = {
            "ok": True,
            "value": Transport(root / "out", trust=trust).dump(value, "the return value"),
        }
    except BaseException as exc:  # everything goes back to the parent, SystemExit included
        record = _error_record(exc)
    atomic_write_text(root / RESULT, json.dumps(record))
