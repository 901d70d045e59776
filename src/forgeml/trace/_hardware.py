"""HARDWARE level: CPU, memory and NVIDIA GPU counters sampled on a thread during the run.

Every ``interval`` seconds the sampler records the process's CPU use (percent of
one core, summed over its threads) and the machine's, the process's resident
memory, and for each NVIDIA GPU that NVML finds its utilisation, memory used
and power draw. Without a GPU (or without ``nvidia-ml-py``) only the CPU and
memory series are sampled.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from forgeml.trace._tracer import Tracer

#: Seconds between samples.
DEFAULT_INTERVAL = 0.05


class HardwareSampler:
    """Samples counters into ``tracer`` from a daemon thread until :meth:`stop`."""

    def __init__(self, tracer: Tracer, interval: float = DEFAULT_INTERVAL) -> None:
        self.tracer = tracer
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._gpus: list[Any] = []

    def _open_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception:  # no driver, no GPU, no package: pynvml raises NVMLError and others
            self._nvml = None
            self._gpus = []

    def sample(self) -> None:
        """Record one sample of every series now."""
        import psutil

        tracer = self.tracer
        process = self._process
        tracer.counter(
            "cpu",
            {
                "process_percent": float(process.cpu_percent(None)),
                "system_percent": float(psutil.cpu_percent(None)),
            },
        )
        tracer.counter("memory", {"rss_mb": process.memory_info().rss / 2**20})
        nvml = self._nvml
        for index, handle in enumerate(self._gpus):
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                values = {
                    "utilization_percent": float(util.gpu),
                    "memory_used_mb": memory.used / 2**20,
                }
                with contextlib.suppress(Exception):  # power is not readable on every board
                    values["power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000
            except Exception:
                continue
            tracer.counter(f"gpu{index}", values)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> HardwareSampler:
        import psutil

        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading starts the interval
        psutil.cpu_percent(None)
        self._open_nvml()
        self.tracer.meta["gpus_sampled"] = len(self._gpus)
        self.sample()
        self._thread = threading.Thread(target=self._run, name="forgeml-hw", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
