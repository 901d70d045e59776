"""Where forgeml keeps its state, and what the machine offers, without importing frameworks."""

from __future__ import annotations

import os
from pathlib import Path


def forgeml_home() -> Path:
    """Where a project's forgeml data lives (results, tracking store): ``$FORGEML_HOME``,
    or ``./.forgeml`` in the working directory."""
    return Path(os.environ.get("FORGEML_HOME") or ".forgeml").expanduser().absolute()


def run_dir() -> Path:
    """Where daemons started by ``app.run(-d)`` leave pid files and records.

    ``$FORGEML_HOME/run`` when ``FORGEML_HOME`` is set; otherwise per user,
    ``~/.forgeml/run``, so ``forgeml ps`` finds daemons started from any folder.
    """
    home = os.environ.get("FORGEML_HOME")
    return Path(home).expanduser().absolute() / "run" if home else Path.home() / ".forgeml" / "run"


def nvidia_gpu_count() -> int:
    """NVIDIA GPUs this process may use, read from the driver (no CUDA initialisation)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        present = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        present = sum(1 for name in _dev_entries() if name.removeprefix("nvidia").isdigit())
    if visible is not None:
        return min(present, len([d for d in visible.split(",") if d.strip()]))
    return present


def _dev_entries() -> list[str]:
    try:
        return [n for n in os.listdir("/dev") if n.startswith("nvidia")]
    except OSError:
        return []
