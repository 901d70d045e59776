"""``forgeml tune``: search hyperparameters with Optuna; show, plot and keep a study's best."""

from __future__ import annotations

import json
from typing import Any

import click

from forgeml._core._errors import CLIError

_STORAGE_HELP = (
    "The study's storage: a journal file path (default <forgeml home>/tune/STUDY.journal) or "
    "a database URL (postgresql://..., mysql://...). SQLite is refused."
)


class _TuneGroup(click.Group):
    """``forgeml tune CONFIG ...`` is ``forgeml tune run CONFIG ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_TuneGroup)
def tune() -> None:
    """Search hyperparameters with Optuna; show, plot and keep a study's best.

    \b
    forgeml tune CONFIG --space SPACE --metric M [options] [KEY=VALUE...]
        runs a search (the same as 'forgeml tune run ...'): CONFIG is a forgeml
        config whose 'entry: module:function' is called with each trial's
        config and returns the metric; SPACE maps dotted config keys
        (model.params.hidden) to distributions.
    forgeml tune status|best|plot STUDY
        shows a study's progress, its best trial (and saves it to a Repo),
        or plots its optimisation history and parameter importances.

    \b
    Examples:
      forgeml tune config.yml --space space.yml --metric val_acc --trials 50 --jobs 2
      forgeml tune status config
      forgeml tune best config --save-to models/
      forgeml tune plot config --out plots/
    """


def _echo(message: str) -> None:
    click.echo(message)


@tune.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option(
    "--space",
    "space",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML file mapping dotted config keys to distributions: "
    "{type: float|int, low, high, log, step} or {type: categorical, choices: [...]} or a list.",
)
@click.option("--metric", required=True, help="The metric the entry returns (or reports).")
@click.option(
    "--direction",
    type=click.Choice(["maximize", "minimize"]),
    default="maximize",
    show_default=True,
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Trials the study should have in all; a resumed study counts those already run.",
)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random", "grid", "cmaes"]),
    default="tpe",
    show_default=True,
    help="How values are drawn (grid needs a step, or choices, for every key; cmaes needs "
    "the cmaes package).",
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="How trials are stopped early from values reported each step.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workers running trials at once (local processes, or Slurm array tasks).",
)
@click.option("--study", default=None, help="Study name [default: the config file's stem].")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Sampler seed (worker i uses SEED+i) [default: the config's seed, else 0].",
)
@click.option("--no-track", is_flag=True, help="Do not record trials as tracking runs.")
@click.option(
    "--slurm",
    is_flag=True,
    help="Submit the workers as one Slurm array (forgeml.jobs) and return; the journal must "
    "be on a filesystem the nodes share.",
)
@click.option("--slurm-time", default=None, help="With --slurm: each worker's time limit.")
@click.option("--slurm-partition", default=None, help="With --slurm: the partition.")
@click.option("--quiet", "-q", is_flag=True, help="Print no line per trial.")
@click.option("--json", "as_json", is_flag=True, help="Print the study's status as JSON.")
def run(
    config: str,
    overrides: tuple[str, ...],
    space: str,
    metric: str,
    direction: str,
    trials: int,
    sampler: str,
    pruner: str,
    jobs: int,
    study: str | None,
    storage: str | None,
    seed: int | None,
    no_track: bool,
    slurm: bool,
    slurm_time: str | None,
    slurm_partition: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Search CONFIG's hyperparameters over SPACE until the study has --trials trials.

    CONFIG is a forgeml config; its key 'entry: module:function' names the
    function each trial calls with its config (the module is imported next to
    CONFIG or from the working directory). It returns the metric, or a mapping
    holding it, and may report it each epoch with forgeml.tune.report(step,
    value) or forgeml.track.log_metrics({METRIC: value}, step=...) so the
    pruner can stop poor trials early. KEY=VALUE arguments override the config.

    Running the same command again resumes the study: finished trials count,
    and trials whose worker was killed are run again. Each trial is a tracking
    run (tags forgeml.study, forgeml.trial) under the study's run.
    """
    from forgeml.tune import optimize

    echo = None if (quiet or as_json) else _echo
    result = optimize(
        config,
        space,
        metric=metric,
        direction=direction,
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        jobs=jobs,
        study=study,
        storage=storage,
        seed=seed,
        overrides=overrides,
        track=not no_track,
        slurm=slurm,
        slurm_options={
            k: v for k, v in (("time", slurm_time), ("partition", slurm_partition)) if v
        },
        echo=echo,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif not slurm:
        click.echo(result.summary())
        if result.best_trial is not None:
            click.echo(f"show it with: forgeml tune best {result.study}")


@tune.command("worker", hidden=True)
@click.argument("study")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--trials", type=click.IntRange(min=1), default=None)
@click.option("--index", type=click.IntRange(min=0), default=None)
@click.option("--quiet", "-q", is_flag=True)
def worker(
    study: str, storage: str | None, trials: int | None, index: int | None, quiet: bool
) -> None:
    """Run trials of STUDY until it has --trials (a worker of 'forgeml tune')."""
    import os
    import signal
    import sys

    from forgeml.tune._study import die_with_parent, run_worker

    die_with_parent()
    # SIGTERM (the command stopping, scancel) ends the running trial like Ctrl-C: its
    # values are queued again for the next run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if index is None:  # a Slurm array task: its index seeds its sampler
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0") or 0)
    try:
        run_worker(
            study, storage=storage, trials=trials, index=index, echo=None if quiet else _echo
        )
    except KeyboardInterrupt:
        sys.exit(130)


@tune.command("status")
@click.argument("study")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--trials", "show_trials", is_flag=True, help="List every trial too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(study: str, storage: str | None, show_trials: bool, as_json: bool) -> None:
    """Show STUDY's progress: trials by state, the best trial so far.

    States: complete, pruned (stopped early), fail (the entry raised), running,
    waiting (queued), abandoned (its worker died; queued again on resume).
    """
    from forgeml.tune import load_study, status

    result = status(study, storage)
    rows = _trial_rows(load_study(study, storage)) if show_trials or as_json else []
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "trial_list": rows}, indent=2, default=str))
        return
    click.echo(result.summary())
    click.echo(
        f"storage: {result.storage}\nsampler: {result.sampler}  pruner: {result.pruner}  "
        f"direction: {result.direction}"
    )
    if result.run_id:
        click.echo(f"tracking run: {result.run_id}")
    if show_trials:
        from rich.table import Table

        from forgeml.cli._output import print_table

        table = Table("TRIAL", "STATE", result.metric.upper(), "STEPS", "SECONDS", "PARAMS")
        for row in rows:
            value = row["value"]
            table.add_row(
                str(row["number"]),
                row["state"],
                "-" if value is None else f"{value:.6g}",
                str(row["steps"]),
                "-" if row["seconds"] is None else f"{row['seconds']:.1f}",
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in row["params"].items()
                ),
            )
        print_table(table)


def _trial_rows(handle: Any) -> list[dict[str, Any]]:
    rows = []
    for t in handle.get_trials(deepcopy=False):
        state = t.state.name
        if state == "FAIL" and t.user_attrs.get("forgeml.stale"):
            state = "ABANDONED"  # a worker died under it; it was queued again
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            {
                "number": t.number,
                "state": state,
                "value": value,
                "steps": len(t.intermediate_values),
                "seconds": seconds,
                "params": dict(t.params),
                "run_id": t.user_attrs.get("forgeml.run_id"),
                "error": t.user_attrs.get("forgeml.error"),
            }
        )
    return rows


@tune.command("best")
@click.argument("study")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option(
    "--object",
    "key",
    default="model",
    show_default=True,
    help="The config key holding the object definition ({cls: ..., params: {...}}).",
)
@click.option(
    "--save-to",
    "repo",
    default=None,
    type=click.Path(file_okay=False),
    help="Build the best definition and add it to this Repo (created if missing).",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Run the entry again with the best config (same seed) and report its metric, which "
    "equals the best trial's only if the config has a seed and the entry is deterministic; "
    "with --save-to, save the trained object the entry returns under 'object'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def best(
    study: str, storage: str | None, key: str, repo: str | None, retrain: bool, as_json: bool
) -> None:
    """Show STUDY's best trial: its value, values, config overrides and object definition."""
    from forgeml.tune import best_config, best_definition, status
    from forgeml.tune import retrain as run_again
    from forgeml.tune._study import _save_best

    result = status(study, storage)
    if result.best_trial is None:
        raise CLIError(
            f"Study '{study}' has no complete trial yet ({result.summary()}). Run more trials."
        )
    cfg = best_config(study, storage)
    node = cfg.get_path(key)
    definition = repr(best_definition(study, key, storage)) if node is not None else None
    out: dict[str, Any] = {
        "study": study,
        "trial": result.best_trial,
        "metric": result.metric,
        "value": result.best_value,
        "params": result.best_params,
        "overrides": [f"{k}={json.dumps(v)}" for k, v in result.best_params.items()],
        "definition": definition,
    }
    again = run_again(study, storage) if retrain else None
    if again is not None:
        out["retrained_value"] = again["value"]
    if repo is not None:
        retrained = again["result"] if again is not None else None
        out["saved"] = _save_best(study, repo, key, storage, retrain, (), retrained)
        out["repo"] = repo
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"best trial {out['trial']} of study '{study}': {result.metric}={out['value']:.6g}")
    for item in out["overrides"]:
        click.echo(f"  {item}")
    if definition is not None:
        click.echo(f"definition: {definition}")
    if "retrained_value" in out:
        click.echo(f"retrained: {result.metric}={out['retrained_value']:.6g}")
    if repo is not None:
        click.echo(f"saved {out['saved']} to {repo}")


@tune.command("plot")
@click.argument("study")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for STUDY-history.png and STUDY-importances.png.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(["history", "importances"]),
    help="Which plot (repeatable) [default: both].",
)
def plot_command(study: str, storage: str | None, out: str, kinds: tuple[str, ...]) -> None:
    """Plot STUDY: optimisation history (each trial's value, best so far) and parameter
    importances (fANOVA), as PNG files."""
    from forgeml.tune import PLOTS, plot

    for path in plot(study, out, kinds=kinds or PLOTS, storage=storage):
        click.echo(str(path))
