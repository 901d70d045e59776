"""``TrainResult``: what one ``fit`` did, epoch by epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """The outcome of ``Trainable.fit``.

    ``history`` holds one dict per epoch (``{"epoch": 1, "loss": ..., "val_loss":
    ..., "val_accuracy": ...}``); ``monitor`` is the metric early stopping and
    "best" follow, ``mode`` whether lower (``"min"``) or higher (``"max"``) is
    better; ``best_epoch`` and ``best_value`` where it was best. ``stopped`` is
    True when a callback raised :class:`StopTraining` (a pruned trial), with its
    message in ``stop_reason``; ``early_stopped`` when patience ran out.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    monitor: str | None = None
    mode: str = "min"
    best_epoch: int | None = None
    best_value: float | None = None
    stopped: bool = False
    stop_reason: str | None = None
    early_stopped: bool = False
    framework: str = ""
    seconds: float = 0.0
    #: the results of each stage, for a Pipe
    stages: list[TrainResult] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """The number of epochs that ran."""
        return len(self.history)

    @property
    def last(self) -> dict[str, float]:
        """The metrics of the last epoch ({} when none ran)."""
        return dict(self.history[-1]) if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers as None)."""
        data = asdict(self)
        data["history"] = [{k: _finite(v) for k, v in row.items()} for row in self.history]
        data["best_value"] = _finite(self.best_value)
        data["stages"] = [stage.to_dict() for stage in self.stages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["stages"] = [cls.from_dict(s) for s in known.get("stages", [])]
        return cls(**known)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
