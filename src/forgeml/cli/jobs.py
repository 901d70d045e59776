"""``forgeml jobs``: launch, watch, stop, cancel and relaunch Slurm jobs and job arrays."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from forgeml._core._errors import JobsError

F = TypeVar("F", bound=Callable[..., Any])

#: ``forgeml jobs log -f`` stops after this many polls in a row where Slurm knows no such job.
LOG_FOLLOW_MISSING_POLLS = 20
#: Seconds between two polls of ``forgeml jobs log -f``.
LOG_FOLLOW_POLL = 0.5


class _CommandThenWords(click.Command):
    """A command whose trailing words are a command line to run (``-- python train.py``).

    Every word before ``--`` that starts with ``-`` must be one of this command's options:
    an unknown one (``--gpu`` for ``--gpus``) is refused, never passed into the command.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            from forgeml._core._errors import did_you_mean

            known = sorted(
                o
                for p in self.get_params(ctx)
                if isinstance(p, click.Option)
                for o in (*p.opts, *p.secondary_opts)
            )
            raise click.UsageError(
                f"Unknown option {exc.option_name!r} of 'forgeml jobs {self.name}'."
                + did_you_mean(exc.option_name, known)
                + f" Options of the command to run go after '--': forgeml jobs {self.name} "
                f"[OPTIONS] -- python train.py --cfg app.yml.",
                ctx,
            ) from None


_LAUNCH_KEYS = (
    "command",
    "name",
    "sets",
    "grid",
    "time",
    "partition",
    "gpus",
    "array_parallelism",
    "requeue",
    "signal_seconds",
    "max_restarts",
    "nodes",
    "ntasks_per_node",
    "cpus_per_task",
    "mem",
)


def _launch_options(fn: F) -> F:
    """The options ``launch`` and ``render`` share."""
    options = [
        click.option("--name", default=None, help="Job name (default: the script's name)."),
        click.option(
            "--args-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="YAML argument sets: a list of override sets (mappings, lists or strings), "
            "or 'grid: {lr: [1e-3, 1e-4]}'. Each set becomes one task of a job array.",
        ),
        click.option(
            "--grid",
            "grid_items",
            multiple=True,
            metavar="'KEY=V1,V2 ...'",
            help="A grid of overrides; the cartesian product becomes a job array. Repeatable.",
        ),
        click.option(
            "--array-parallelism",
            type=int,
            default=None,
            help="Tasks of the array running at once.",
        ),
        click.option("--time", "time_limit", default=None, help="Time limit: MINUTES or HH:MM:SS."),
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--gpus", type=int, default=None, help="GPUs per job (task of an array)."),
        click.option("--cpus-per-task", type=int, default=None, help="CPUs per task."),
        click.option("--mem", default=None, help="Memory per node, e.g. 16G."),
        click.option("--nodes", type=int, default=None, help="Node count."),
        click.option("--ntasks-per-node", type=int, default=None, help="Tasks per node."),
        click.option(
            "--requeue",
            is_flag=True,
            default=None,
            help="Checkpoint before the time limit (SIGUSR1, app.on_checkpoint) and requeue.",
        ),
        click.option(
            "--signal-seconds",
            type=int,
            default=None,
            help="With --requeue: seconds before the time limit Slurm signals (default 120).",
        ),
        click.option(
            "--max-restarts",
            type=int,
            default=None,
            help="With --requeue: how many times a task restarts itself at most (default 3).",
        ),
        click.argument("args", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _launch_spec(args: Sequence[str], **given: Any) -> dict[str, Any]:
    """The launch described by a launch file (``CONFIG``) or a command (``-- CMD``), with the
    options given on the command line taking precedence."""
    spec: dict[str, Any] = {}
    words = list(args)
    if len(words) == 1 and words[0].endswith((".yml", ".yaml")) and Path(words[0]).is_file():
        import yaml

        data = yaml.safe_load(Path(words[0]).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise JobsError(f"{words[0]} must be a YAML mapping with a 'command'. Got {data!r}.")
        unknown = [k for k in data if k not in _LAUNCH_KEYS]
        if unknown:
            from forgeml._core._errors import did_you_mean

            raise JobsError(
                f"Unknown key '{unknown[0]}' in {words[0]}. Known: {', '.join(_LAUNCH_KEYS)}."
                + did_you_mean(str(unknown[0]), _LAUNCH_KEYS)
            )
        spec.update(data)
        command = spec.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if not isinstance(command, list) or not command:
            raise JobsError(
                f"{words[0]} needs 'command:', a list (or a string) such as "
                f"[python, train.py, --cfg, configs/app.yml]."
            )
        spec["command"] = [str(c) for c in command]
    elif words:
        spec["command"] = words
    else:
        raise JobsError(
            "Give a launch file or a command: forgeml jobs launch sweep.yml, or "
            "forgeml jobs launch -- python train.py --cfg app.yml."
        )
    from forgeml.jobs import grid, load_sets

    sets: list[list[str]] | None = None
    grid_items = given.pop("grid_items", ()) or ()
    if given.get("args_file") and grid_items:
        raise JobsError(
            f"Give --args-file or --grid, not both (got --args-file {given['args_file_path']} "
            f"and --grid {' '.join(grid_items)!r}): put the grid in the file as "
            f"'grid: {{lr: [1e-3, 1e-4]}}', or drop one."
        )
    if given.pop("args_file", None):
        sets = load_sets(str(given["args_file_path"]))
    given.pop("args_file_path", None)
    if grid_items:
        sets = grid(" ".join(grid_items))
    if sets is None and spec.get("sets") is not None:
        raw = spec["sets"]
        sets = (
            [shlex.split(s) if isinstance(s, str) else [str(x) for x in s] for s in raw]
            if isinstance(raw, list)
            else None
        )
        if sets is None:
            raise JobsError("'sets' in a launch file must be a list of override sets.")
    if sets is None and spec.get("grid") is not None:
        raw = spec["grid"]
        if isinstance(raw, dict):
            raw = [
                f"{k}={','.join(str(v) for v in (vs if isinstance(vs, list) else [vs]))}"
                for k, vs in raw.items()
            ]
        sets = grid(raw)
    spec.pop("grid", None)
    spec["sets"] = sets
    for key, value in given.items():
        if value is not None:
            spec[key] = value
    return spec


def _spec_from(
    args: Sequence[str], args_file: str | None, grid_items: Sequence[str], **options: Any
) -> dict[str, Any]:
    options["time"] = options.pop("time_limit", None)
    return _launch_spec(
        args,
        args_file=bool(args_file),
        args_file_path=args_file,
        grid_items=tuple(grid_items),
        **options,
    )


@click.group("jobs")
def jobs() -> None:
    """Launch, watch, stop and relaunch Slurm jobs and job arrays.

    Jobs are recorded under FORGEML_HOME/jobs (script, logs, each task's tracking run
    and checkpoint). Status comes from one sacct call (with accounting) or one squeue call
    for all jobs, with the job-completion log for jobs Slurm no longer lists.
    """


@jobs.command("launch", cls=_CommandThenWords)
@_launch_options
@click.option(
    "--secret",
    "secret_names",
    multiple=True,
    metavar="NAME",
    help="A secret of 'forgeml secrets' to export into the job's environment. Repeatable. "
    "By default no secret is exported (Slurm keeps a job's environment in its state files).",
)
@click.option(
    "--all-secrets",
    is_flag=True,
    help="Export every stored secret into the job's environment.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def launch_command(
    args: tuple[str, ...],
    args_file: str | None,
    grid_items: tuple[str, ...],
    secret_names: tuple[str, ...],
    all_secrets: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Submit CONFIG (a launch file) or the command after '--' as a job or a job array.

    \b
    forgeml jobs launch -- python train.py --cfg configs/app.yml
    forgeml jobs launch --grid 'lr=1e-3,1e-4 bs=32,64' -- python train.py --cfg app.yml
    forgeml jobs launch sweep.yml --time 00:30:00 --requeue

    A launch file is YAML with 'command' (a list or a string) and any of: name, sets,
    grid, time, partition, gpus, array_parallelism, requeue, signal_seconds,
    max_restarts, nodes, ntasks_per_node, cpus_per_task, mem. Each argument set's words
    are appended to the command of its task (for an app.run program: config overrides
    after --cfg). Every word before '--' that starts with '-' must be an option of
    this command. Tracking settings reach the job through its environment, never the
    script; so do the secrets named with --secret (or all of them with --all-secrets).
    """
    from forgeml.jobs import launch

    if all_secrets and secret_names:
        raise JobsError(
            f"Give --secret NAME or --all-secrets, not both (got --secret "
            f"{', '.join(secret_names)} and --all-secrets)."
        )
    spec = _spec_from(args, args_file, grid_items, **options)
    job = launch(
        spec.pop("command"),
        overrides=spec.pop("sets"),
        secrets=True if all_secrets else list(secret_names),
        **{k: v for k, v in spec.items() if v is not None},
    )
    if as_json:
        click.echo(
            json.dumps({"id": job.id, "name": job.name, "tasks": job.tasks, "dir": str(job.dir)})
        )
        return
    what = f"array of {job.tasks} tasks" if job.array else "job"
    click.echo(f"Submitted {what} {job.id} ({job.name}); logs in {job.dir / 'logs'}")


@jobs.command("status")
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the tasks.")
def status_command(job: str | None, as_json: bool) -> None:
    """The state of JOB's tasks (default: of every job forgeml launched), in one Slurm call."""
    from forgeml.jobs import list_jobs, status
    from forgeml.jobs._records import find_record, task_states

    if job is not None:
        record = find_record(job)
        found = status([job])
        states = task_states(record)
        rows = []
        for key, task in sorted(found.items(), key=lambda kv: kv[1].task or 0):
            if "_" in job and key != job:
                continue
            row = task.to_dict()
            row["run_id"] = states.get(task.task or 0, {}).get("run_id")
            rows.append(row)
    else:
        rows = [
            {"id": t["id"], "state": t["state"], "run_id": t["run_id"], "reason": "", "elapsed": ""}
            for j in list_jobs()
            for t in j["tasks"]
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from forgeml.cli._output import print_table

    table = Table("task", "state", "reason", "elapsed", "run")
    for row in rows:
        table.add_row(
            row["id"],
            row["state"],
            row.get("reason") or "",
            row.get("elapsed") or "",
            row.get("run_id") or "",
        )
    print_table(table)


@jobs.command("log")
@click.argument("job")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing new output until the task ends: Slurm lists it as finished, its "
    f"runner recorded it DONE, or Slurm has not known it for {LOG_FOLLOW_MISSING_POLLS} "
    "polls in a row.",
)
def log_command(job: str, follow: bool) -> None:
    """Print the output of JOB (a single job) or JOB_TASK (a task of an array)."""
    from forgeml.jobs import log_path, status
    from forgeml.jobs._records import find_record, read_json, task_state_path

    path = log_path(job)
    record = find_record(job)
    task = job.partition("_")[2]
    state_path = task_state_path(Path(record["dir"]), int(task) if task.isdigit() else 0)
    offset = 0
    missing = 0
    while True:
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
                offset += len(chunk)
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
        if not follow:
            if not path.exists():
                raise JobsError(f"Job {job} has written no output yet ({path}). Try again with -f.")
            return
        found = status([job]).get(job)
        missing = 0 if found is not None else missing + 1
        if (found is not None and found.done) or read_json(state_path).get("state") == "DONE":
            follow = False  # one last read
            continue
        if missing >= LOG_FOLLOW_MISSING_POLLS:
            follow = False
            click.echo(
                f"forgeml: Slurm has not listed job {job} for {missing} polls in a row "
                f"(it forgot the job, or it ran on another cluster); stopped following.",
                err=True,
            )
            continue
        time.sleep(LOG_FOLLOW_POLL)


@jobs.command("stop")
@click.argument("job")
def stop_command(job: str) -> None:
    """Stop JOB gracefully: SIGTERM; app.run programs save a checkpoint and end their run."""
    from forgeml.jobs import stop

    stop(job)
    click.echo(f"Sent SIGTERM to job {job}.")


@jobs.command("cancel")
@click.argument("job")
def cancel_command(job: str) -> None:
    """Cancel JOB (or JOB_TASK) at once (scancel)."""
    from forgeml.jobs import cancel

    cancel(job)
    click.echo(f"Cancelled job {job}.")


@jobs.command("relaunch")
@click.option("--run-id", required=True, help="The tracking run whose job to submit again.")
@click.option("--time", "time_limit", default=None, help="A new time limit.")
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON.")
def relaunch_command(run_id: str, time_limit: str | None, as_json: bool) -> None:
    """Submit again the task that produced tracking run RUN, resuming that run and its last
    checkpoint (cfg.resume)."""
    from forgeml.jobs import relaunch

    job = relaunch(run_id, time=time_limit) if time_limit else relaunch(run_id)
    if as_json:
        click.echo(json.dumps({"id": job.id, "name": job.name, "run_id": run_id}))
        return
    click.echo(f"Submitted job {job.id}, resuming run {run_id}.")


@jobs.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_command(as_json: bool) -> None:
    """The jobs forgeml launched (newest last), with their tasks' states and runs."""
    from forgeml.jobs import list_jobs

    rows = list_jobs()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from forgeml.cli._output import print_table

    table = Table("job", "name", "tasks", "states", "runs", "command")
    for row in rows:
        states: dict[str, int] = {}
        for task in row["tasks"]:
            states[task["state"]] = states.get(task["state"], 0) + 1
        runs = sorted({t["run_id"] for t in row["tasks"] if t["run_id"]})
        table.add_row(
            row["id"],
            row["name"],
            str(len(row["tasks"])),
            ", ".join(f"{n} {s}" for s, n in states.items()),
            ", ".join(runs) if len(runs) <= 2 else f"{len(runs)} runs",
            shlex.join(row["command"]),
        )
    print_table(table)


@jobs.command("render", cls=_CommandThenWords)
@_launch_options
@click.option("--k8s", "target", flag_value="k8s", help="A Kubernetes Job (Indexed for arrays).")
@click.option("--apptainer", "target", flag_value="apptainer", help="apptainer exec commands.")
@click.option(
    "--image", required=True, help="Container image (Kubernetes) or .sif/docker:// (Apptainer)."
)
@click.option("--secret", default=None, help="Kubernetes: the Secret whose keys become env vars.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write here (default: stdout).",
)
def render_command(
    args: tuple[str, ...],
    args_file: str | None,
    grid_items: tuple[str, ...],
    target: str | None,
    image: str,
    secret: str | None,
    output: str | None,
    **options: Any,
) -> None:
    """Write the same launch as a Kubernetes Job manifest or Apptainer commands."""
    from forgeml.jobs import render_apptainer, render_k8s
    from forgeml.jobs._launch import default_name

    if target is None:
        raise JobsError("Choose what to render: --k8s or --apptainer.")
    spec = _spec_from(args, args_file, grid_items, **options)
    if target == "k8s":
        import yaml

        manifest = render_k8s(
            spec["command"],
            image=image,
            overrides=spec.get("sets"),
            name=spec.get("name") or default_name(spec["command"]),
            time=spec.get("time"),
            gpus=spec.get("gpus"),
            cpus_per_task=spec.get("cpus_per_task"),
            mem=spec.get("mem"),
            array_parallelism=spec.get("array_parallelism"),
            requeue=bool(spec.get("requeue")),
            max_restarts=int(spec.get("max_restarts") or 3),
            secret=secret,
        )
        text = yaml.safe_dump(manifest, sort_keys=False)
    else:
        lines = render_apptainer(
            spec["command"], image=image, overrides=spec.get("sets"), gpus=spec.get("gpus")
        )
        text = "#!/bin/bash\nset -e\n" + "".join(f"{shlex.join(line)}\n" for line in lines)
    if output is None:
        click.echo(text, nl=False)
        return
    from forgeml._core._files import atomic_write_text

    atomic_write_text(output, text)
    click.echo(f"Wrote {output}")
