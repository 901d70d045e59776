"""Inside a trial: report intermediate values, learn whether to stop (pruning)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Pruned(Exception):
    """Raised by :func:`report` (or ``track.log_metrics``) when the pruner stops a trial.

    Let it propagate out of the entry function: the trial is then recorded as
    pruned. Catch it only to clean up, and raise it again.
    """


@dataclass
class TrialInfo:
    """What a running trial is: its study, number, searched values and config."""

    study: str
    number: int
    params: dict[str, Any]
    metric: str
    run_id: str | None = None
    #: (step, value) of every value reported for the metric, in order.
    reported: list[tuple[int, float]] = field(default_factory=list)


class _Active:
    def __init__(self, info: TrialInfo, trial: Any, log: Callable[[Mapping[str, Any], int], None]):
        self.info = info
        self.trial = trial
        self.log = log
        self.pruned_at: int | None = None

    def observe(self, step: int, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            return
        if any(s == step for s, _ in self.info.reported):
            return  # optuna keeps the first value of a step
        self.info.reported.append((step, value))
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            raise Pruned(
                f"Trial {self.info.number} of study '{self.info.study}' was pruned at step "
                f"{step} ({self.info.metric}={value:g})."
            )


_active: _Active | None = None


def activate(active: _Active | None) -> None:
    global _active
    _active = active


def current_trial() -> TrialInfo | None:
    """The trial running in this process (None outside a search)."""
    return _active.info if _active is not None else None


def report(step: int, value: float, **metrics: float) -> None:
    """Report the searched metric's value at ``step`` (an epoch) of the running trial.

    The value is logged to the trial's tracking run (with ``metrics``, other values
    to log at that step) and given to the pruner; when it says stop, this raises
    :class:`Pruned`. Outside a search it only logs, to the active tracking run if any.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        from forgeml._core._errors import TuneError

        raise TuneError(f"tune.report: 'step' must be a non-negative integer. Got {step!r}.")
    if _active is None:
        from forgeml import track

        if track.active_run() is not None:
            track.log_metrics({"value": value, **metrics}, step=step)
        return
    _active.log({_active.info.metric: value, **metrics}, step)
    _active.observe(step, value)


def should_prune() -> bool:
    """True when the pruner would stop the running trial now (False outside a search)."""
    return bool(_active is not None and _active.trial.should_prune())


def callback(metric: str | None = None) -> Any:
    """A ``forgeml.train.ReportCallback`` that reports each epoch to the running trial.

    ``metric`` names the epoch metric to report (``val_accuracy``); by default the
    study's ``--metric``. When the pruner stops the trial it raises
    ``forgeml.train.StopTraining``, so ``Trainable.fit`` ends cleanly, and the trial
    is recorded as pruned even though the entry returns. Outside a search it
    does nothing.
    """
    from forgeml.train import ReportCallback, StopTraining

    def report_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if _active is None:
            return
        name = metric or _active.info.metric
        if name not in metrics:
            from forgeml._core._errors import TuneError, did_you_mean

            raise TuneError(
                f"tune.callback: the epoch metrics {sorted(metrics)} have no '{name}'. Pass "
                f"the one to report, e.g. tune.callback('val_accuracy')."
                + did_you_mean(name, list(metrics))
            )
        try:
            report(int(epoch), float(metrics[name]))
        except Pruned as exc:
            raise StopTraining(str(exc)) from exc

    return ReportCallback(report_epoch)
