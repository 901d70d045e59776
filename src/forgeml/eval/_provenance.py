"""What an evaluation ran on: machine, accelerator, libraries, code version, threads.

Everything here is read without importing an ML framework: the CPU from
``/proc/cpuinfo`` (or :mod:`platform`), GPUs from ``pynvml`` when installed
(else ``nvidia-smi`` when on ``PATH``, else none), library versions from the
installed distributions' metadata, the code version from ``git``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from forgeml._version import __version__

#: Distributions whose versions are recorded for each framework (the first installed wins
#: where there are alternatives, e.g. ``tensorflow`` or ``tensorflow-cpu``).
FRAMEWORK_DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "pytorch": (("torch",),),
    "tensorflow": (("tensorflow", "tensorflow-cpu"), ("keras",)),
    "sklearn": (("scikit-learn",),),
    "xgboost": (("xgboost", "xgboost-cpu"),),
    "onnxruntime": (("onnxruntime", "onnxruntime-gpu"), ("onnx",)),
    "tensorrt": (("tensorrt",),),
    "torchscript": (("torch",),),
}
#: Environment variables that set thread pools.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(framework: str) -> dict[str, str]:
    """``{"python": ..., "numpy": ..., "torch": ...}`` for the framework's distributions."""
    versions = {"python": platform.python_version(), "forgeml": __version__}
    numpy_version = _version("numpy")
    if numpy_version:
        versions["numpy"] = numpy_version
    for alternatives in FRAMEWORK_DISTRIBUTIONS.get(framework, ()):
        for name in alternatives:
            found = _version(name)
            if found:
                versions[name] = found
                break
    return versions


@cache
def cpu_info() -> dict[str, Any]:
    """The CPU model, logical and physical core counts, and this process's CPU affinity."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split("\n"):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model", "Hardware") and value.strip():
                model = value.strip()
                break
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    physical: int | None = None
    with contextlib.suppress(Exception):
        import psutil

        physical = psutil.cpu_count(logical=False)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "model": model,
        "logical_cores": os.cpu_count() or 1,
        "physical_cores": physical,
        "usable_cores": usable,
    }


@cache
def gpu_info() -> list[dict[str, Any]]:
    """The NVIDIA GPUs: ``[{"index", "name", "memory_mb", "driver", "uuid"}]``, or ``[]``
    without one. Indices are the driver's (every GPU, whatever ``CUDA_VISIBLE_DEVICES`` says).

    Asks ``pynvml`` when installed, else ``nvidia-smi`` when it is on ``PATH``.
    """
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _gpus_from_smi()
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml raises its own error class without a driver
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_mb": int(memory.total) // (1 << 20),
                    "driver": driver,
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                }
            )
        return gpus
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpus_from_smi() -> list[dict[str, Any]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [
                smi,
                "--query-gpu=index,name,memory.total,driver_version,uuid",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        index, name, memory, driver, uuid = parts
        memory_mb = memory.split()[0]
        gpus.append(
            {
                "index": int(index) if index.isdigit() else index,
                "name": name,
                "memory_mb": int(memory_mb) if memory_mb.isdigit() else None,
                "driver": driver,
                "uuid": uuid,
            }
        )
    return gpus


def device_gpu(device: str, gpus: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record in ``gpus`` (:func:`gpu_info`) of the GPU that ``device`` runs on.

    ``"cuda:N"`` is the N-th GPU visible to this process: the N-th entry of
    ``CUDA_VISIBLE_DEVICES`` (a driver index or a UUID prefix) when it is set, else
    driver index N. None for ``"cpu"``, or when the GPU is not among ``gpus``.
    """
    from forgeml.eval.agents._base import device_index

    index = device_index(device)
    if index is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        wanted = str(index)
    else:
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(entries):
            return None
        wanted = entries[index]
    for gpu in gpus:
        if wanted.isdigit():
            if str(gpu.get("index")) == str(int(wanted)):
                return gpu
        elif str(gpu.get("uuid") or "").startswith(wanted):
            return gpu
    return None


def thread_settings(threads: int | None, predictor_info: Mapping[str, Any]) -> dict[str, Any]:
    """The thread count asked for, what the agent reports, and the thread env variables."""
    settings: dict[str, Any] = {"requested": threads}
    if "threads" in predictor_info:
        settings["agent"] = predictor_info["threads"]
    for name in THREAD_VARIABLES:
        if name in os.environ:
            settings[name] = os.environ[name]
    return settings


def collect_provenance(
    *,
    framework: str,
    device: str,
    threads: int | None,
    predictor_info: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything worth knowing to reproduce or compare an evaluation's numbers."""
    from forgeml._core._env import nvidia_gpu_count
    from forgeml._core._git import git_info

    # The driver lists GPUs in /proc without initialising CUDA; ask NVML only then.
    gpus = gpu_info() if nvidia_gpu_count() > 0 or device != "cpu" else []
    git = git_info()
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_info(),
        "gpu": (device_gpu(device, gpus) or {}).get("name"),
        "gpus": gpus,
        "device": device,
        "threads": thread_settings(threads, predictor_info),
        "framework": framework,
        "versions": library_versions(framework),
        "agent": {str(k): str(v) for k, v in predictor_info.items()},
        "forgeml_version": __version__,
        "git_commit": git.commit if git is not None else None,
        "git_dirty": git.dirty if git is not None else None,
        "git_untracked": git.untracked if git is not None else None,
    }
