"""Callbacks: what a training procedure calls at the end of every epoch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from forgeml._core._errors import TrainError
from forgeml.objects import Object

if TYPE_CHECKING:
    from forgeml.train._result import TrainResult


class StopTraining(Exception):
    """Raised by a callback to end training now; the loop ends cleanly and marks it stopped.

    A tuner's pruner raises it from a :class:`ReportCallback`: the result has
    ``stopped=True`` and ``stop_reason`` set to the message.
    """


class Callback:
    """The base of training callbacks; override the hooks you need.

    ``on_epoch_end`` receives the epoch (1 is the first) and that epoch's
    metrics (``loss``, ``val_loss``, ``val_accuracy``...). Raising
    :class:`StopTraining` from a hook ends training cleanly.
    """

    def on_train_begin(self, trainable: Any) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after every epoch with its metrics."""

    def on_train_end(self, result: TrainResult) -> None:
        """Called once when training ends (also after early stopping or StopTraining)."""


class ReportCallback(Callback):
    """Forwards every epoch's metrics to ``fn(epoch, metrics)``: how a tuner prunes.

    ``fn`` may raise :class:`StopTraining` to end the trial. A ReportCallback
    holds a function, so it is not part of a Trainable's definition: pass it
    to ``fit(callbacks=...)`` (or to the Trainable, which then drops it from
    its definition and archive).
    """

    def __init__(self, fn: Callable[[int, dict[str, float]], Any]) -> None:
        if not callable(fn):
            raise TrainError(
                f"ReportCallback takes a function fn(epoch, metrics). Got {fn!r} "
                f"({type(fn).__name__})."
            )
        self.fn = fn

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.fn(epoch, dict(metrics))

    def __repr__(self) -> str:
        return f"ReportCallback({getattr(self.fn, '__qualname__', self.fn)!r})"


class TrackCallback(Object, Callback):
    """Logs every epoch's metrics to the active :mod:`forgeml.track` run (step: the epoch).

    ``prefix`` is put before every name (``"digits/"`` gives
    ``digits/val_accuracy``). Without an active run, forgeml.track warns once
    and records nothing. It is an Object, so it is part of the definition.
    """

    def __init__(self, prefix: str = "") -> None:
        if not isinstance(prefix, str):
            raise TrainError(f"TrackCallback's prefix must be a string. Got {prefix!r}.")
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        from forgeml import track

        values = {f"{self.prefix}{k}": float(v) for k, v in metrics.items() if _is_number(v)}
        track.log_metrics(values, step=epoch)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
