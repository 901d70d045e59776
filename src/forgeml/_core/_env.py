"""Where forgeml keeps its state, and what the machine offers, without importing frameworks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forgeml._core._errors import ConfigError

#: Where :func:`process_rank` looks, in order: the first one set to an integer wins.
RANK_VARIABLES = ("RANK", "SLURM_PROCID")
#: The spellings :func:`parse_bool` reads as true and as false (any case).
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def parse_bool(text: str, *, name: str) -> bool:
    """``text`` (an environment variable's or option's value, called ``name`` in the
    error) as a boolean: ``true/1/yes/on`` or ``false/0/no/off``, any case, spaces
    around ignored. Anything else raises :class:`~forgeml.ConfigError` (a ValueError)
    that says so, never a silent ``True``."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{name} must be a boolean: one of {', '.join(TRUE_WORDS)} or "
        f"{', '.join(FALSE_WORDS)} (any case). Got {text!r}."
    )


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


def process_rank(cfg: Mapping[str, Any] | None = None) -> int:
    """This process's global rank in a distributed run (0 when it is not part of one).

    Looked up in this order, the first one that holds an integer winning:

    1. ``$RANK`` (torchrun, ``app.run --dist torch`` workers, most launchers);
    2. ``$SLURM_PROCID`` (a Slurm task; a launcher inside it sets ``RANK``);
    3. ``cfg["rank"]`` (``--rank``, set by ``app.run`` in its workers; negative: unset).
    """
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.lstrip("-").isdigit():
            return max(int(value), 0)
    rank = cfg.get("rank") if cfg is not None else None
    if isinstance(rank, bool):
        return 0
    try:
        return max(int(rank), 0) if rank is not None else 0
    except (TypeError, ValueError):
        return 0


def is_rank_zero(cfg: Mapping[str, Any] | None = None) -> bool:
    """True in the process that logs, posts and writes for a run: rank 0 (see
    :func:`process_rank`), or a process that is not part of a distributed run."""
    return process_rank(cfg) == 0
