"""Trace levels: how deep a trace goes. Each level includes those above it."""

from __future__ import annotations

import enum
from typing import Any

from forgeml._core._errors import TraceError, did_you_mean


class TraceLevel(enum.IntEnum):
    """``NO_TRACE < APPLICATION < MODEL < FRAMEWORK < LIBRARY < HARDWARE < FULL``.

    - ``APPLICATION``: the evaluation, dataset and model load, warmup, each batch
      with its preprocess and postprocess.
    - ``MODEL``: each predict call.
    - ``FRAMEWORK``: layers (torch modules, Keras layers, ONNX Runtime nodes).
    - ``LIBRARY``: operator and kernel-library calls inside the layers (torch profiler).
    - ``HARDWARE``: CPU, memory and NVIDIA GPU counters sampled during the run.
    - ``FULL``: all of the above, with input shapes on the operators.
    """

    NO_TRACE = 0
    APPLICATION = 1
    MODEL = 2
    FRAMEWORK = 3
    LIBRARY = 4
    HARDWARE = 5
    FULL = 6


#: Level names as users may spell them (``model``, ``MODEL``, ``no_trace``, ``none``, ``2``).
_ALIASES = {"NONE": TraceLevel.NO_TRACE, "OFF": TraceLevel.NO_TRACE, "LAYER": TraceLevel.FRAMEWORK}


def parse_level(value: Any) -> TraceLevel:
    """A :class:`TraceLevel` from a level, its name (any case, ``-`` or ``_``) or its number."""
    if isinstance(value, TraceLevel):
        return value
    if value is None:
        return TraceLevel.NO_TRACE
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return TraceLevel(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        if key.isdigit():
            return parse_level(int(key))
        if key in TraceLevel.__members__:
            return TraceLevel[key]
        if key in _ALIASES:
            return _ALIASES[key]
    names = list(TraceLevel.__members__)
    hint = did_you_mean(str(value).upper(), names) if isinstance(value, str) else ""
    raise TraceError(
        f"Unknown trace level {value!r}. Known (each includes those before it): "
        f"{', '.join(names)}, or their numbers 0-6.{hint}"
    )
