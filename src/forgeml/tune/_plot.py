"""Plots of a study: optimisation history and parameter importances (matplotlib)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgeml._core._errors import TuneError, did_you_mean
from forgeml._core._files import atomic_path

#: The plots ``plot`` draws, by name.
PLOTS = ("history", "importances")


def plot(
    study: str,
    out: str | os.PathLike[str] = ".",
    *,
    kinds: Sequence[str] = PLOTS,
    storage: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write ``<out>/<study>-<kind>.png`` for each kind; returns the files written.

    ``history`` is the objective value of each trial with the best so far;
    ``importances`` ranks the searched parameters by how much of the objective's
    variance each explains (fANOVA; it needs two or more complete trials).
    """
    for kind in kinds:
        if kind not in PLOTS:
            raise TuneError(
                f"Unknown plot {kind!r}. Known: {', '.join(PLOTS)}." + did_you_mean(kind, PLOTS)
            )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    from forgeml.tune._study import load_study

    handle = load_study(study, storage)
    complete = handle.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in kinds:
        if kind == "importances" and len(complete) < 2:
            raise TuneError(
                f"Parameter importances need at least 2 complete trials; study '{study}' has "
                f"{len(complete)}. Run more trials, or plot only the history."
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if kind == "history":
                axes = oplt.plot_optimization_history(handle)
            else:
                axes = oplt.plot_param_importances(handle)
        figure: Any = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        target = folder / f"{study}-{kind}.png"
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        plt.close(figure)
        written.append(target)
    return written
