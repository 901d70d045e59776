"""Launching Slurm jobs and arrays, and managing them: status, wait, stop, cancel, relaunch."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import JobsError
from forgeml._core._files import atomic_write_text
from forgeml.jobs import _slurm
from forgeml.jobs._records import (
    find_record,
    jobs_dir,
    task_state_path,
    task_states,
    write_json,
)
from forgeml.jobs._slurm import TaskStatus

#: Seconds before the time limit at which a ``requeue`` job gets SIGUSR1.
SIGNAL_SECONDS = 120
#: How many times a ``requeue`` job restarts itself at most.
MAX_RESTARTS = 3

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:@%+=/\[\]-]+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$|^(UNLIMITED|INFINITE)$", re.IGNORECASE)


@dataclass
class Job:
    """A job (or job array) forgeml submitted: ``id``, ``name``, ``tasks`` and its folder."""

    id: str
    name: str
    tasks: int
    dir: Path
    command: list[str] = field(default_factory=list)
    sets: list[list[str]] = field(default_factory=list)
    array: bool = False

    def task_keys(self) -> list[str]:
        """``JOB`` for a single job, ``JOB_0 ... JOB_<n-1>`` for an array."""
        return [f"{self.id}_{i}" for i in range(self.tasks)] if self.array else [self.id]

    def status(self) -> dict[str, TaskStatus]:
        return status([self.id])

    def wait(self, timeout: float = 600.0, poll: float = 0.5) -> dict[str, TaskStatus]:
        return wait(self, timeout=timeout, poll=poll)

    def log(self, task: int | None = None) -> Path:
        return log_path(self.id if task is None else f"{self.id}_{task}")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Job:
        return cls(
            id=str(record["id"]),
            name=str(record.get("name", "")),
            tasks=int(record.get("tasks", 1)),
            dir=Path(record["dir"]),
            command=[str(c) for c in record.get("command", [])],
            sets=[[str(o) for o in s] for s in record.get("sets", [])],
            array=bool(record.get("array")),
        )


# ----------------------------------------------------------------------------- argument sets


def grid(spec: str | Sequence[str]) -> list[list[str]]:
    """The cartesian product of ``key=v1,v2`` items: ``"lr=1e-3,1e-4 bs=32,64"`` -> 4 sets."""
    items = shlex.split(spec) if isinstance(spec, str) else [str(s) for s in spec]
    axes: list[list[str]] = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise JobsError(
                f"A grid item must read key=value1,value2,... Got {item!r}. "
                f"Example: --grid 'lr=1e-3,1e-4 bs=32,64'."
            )
        axes.append([f"{key.strip()}={v.strip()}" for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)] if axes else []


def _override_set(item: Any, where: str) -> list[str]:
    if isinstance(item, Mapping):
        return [f"{k}={_yaml_value(v)}" for k, v in item.items()]
    if isinstance(item, str):
        return shlex.split(item)
    if isinstance(item, list | tuple) and all(isinstance(i, str | int | float) for i in item):
        return [str(i) for i in item]
    raise JobsError(
        f"Each argument set in {where} must be a mapping (lr: 1e-3), a list of strings "
        f"(['lr=1e-3']) or a string ('lr=1e-3 bs=32'). Got {item!r}."
    )


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        import json

        return json.dumps(value)
    return str(value)


def load_sets(path: str | os.PathLike[str]) -> list[list[str]]:
    """Argument sets from a YAML file: a list of sets, or ``{grid: {lr: [...], bs: [...]}}``."""
    file = Path(path)
    if not file.is_file():
        raise JobsError(f"The argument-set file {str(path)!r} does not exist.")
    import yaml

    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    if isinstance(data, Mapping) and "grid" in data:
        spec = data["grid"]
        if isinstance(spec, Mapping):
            spec = [
                f"{k}={','.join(_yaml_value(v) for v in (vs if isinstance(vs, list) else [vs]))}"
                for k, vs in spec.items()
            ]
        return grid(spec)
    if isinstance(data, Mapping) and "sets" in data:
        data = data["sets"]
    if not isinstance(data, list) or not data:
        raise JobsError(
            f"{path} must hold a non-empty YAML list of argument sets, or a 'grid:' mapping "
            f"of lists. Got {type(data).__name__}."
        )
    return [_override_set(item, str(path)) for item in data]


# ----------------------------------------------------------------------------- the script


def _check_value(option: str, value: Any) -> str:
    text = str(value)
    if not _SAFE_VALUE.match(text):
        raise JobsError(
            f"The Slurm option --{option} must be one word of letters, digits and . , : @ % + = / "
            f"[ ] - _ (it goes on an #SBATCH line). Got {text!r}."
        )
    return text


def sbatch_options(
    *,
    name: str,
    output: str | None = None,
    array: str | None = None,
    time_limit: str | None = None,
    partition: str | None = None,
    gpus: int | None = None,
    nodes: int | None = None,
    ntasks_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem: str | None = None,
    nodelist: str | None = None,
    constraint: str | None = None,
    requeue: bool = False,
    signal_seconds: int = SIGNAL_SECONDS,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ``--option=value`` words of a job's ``#SBATCH`` lines, each value checked.

    :func:`launch` passes ``--output`` on sbatch's command line instead (an argument list:
    a forgeml home with spaces in its path works), so it leaves ``output`` out.
    """
    if time_limit not in (None, "", "0") and not _TIME.match(str(time_limit)):
        raise JobsError(
            f"--time must be a Slurm time limit: MINUTES, HH:MM:SS, D-HH or D-HH:MM:SS. "
            f"Got {time_limit!r}."
        )
    for label, number in (
        ("gpus", gpus),
        ("nodes", nodes),
        ("ntasks-per-node", ntasks_per_node),
        ("cpus-per-task", cpus_per_task),
    ):
        if number is not None and (
            isinstance(number, bool) or int(number) < (0 if label == "gpus" else 1)
        ):
            raise JobsError(f"--{label} must be a positive integer. Got {number!r}.")
    if int(signal_seconds) < 1:
        raise JobsError(
            "The requeue signal offset must be a positive number of seconds. "
            f"Got {signal_seconds!r}."
        )
    words = {
        "job-name": name,
        "output": output or None,
        "open-mode": "append",
        "array": array,
        "time": None if time_limit in (None, "", "0") else time_limit,
        "partition": partition,
        "gpus": gpus or None,
        "nodes": nodes,
        "ntasks-per-node": ntasks_per_node,
        "cpus-per-task": cpus_per_task,
        "mem": None if mem in (None, "", "0") else mem,
        "nodelist": nodelist,
        "constraint": constraint,
        "signal": f"B:USR1@{int(signal_seconds)}" if requeue else None,
        **dict(extra or {}),
    }
    lines = [f"--{k}={_check_value(k, v)}" for k, v in words.items() if v is not None]
    lines.append("--requeue" if requeue else "--no-requeue")
    return lines


def render_script(options: Sequence[str], job_dir: Path, command: Sequence[str], title: str) -> str:
    """The sbatch script: ``#SBATCH`` lines, then the task runner and the command, each word
    quoted with :func:`shlex.quote` (no shell string is built from pieces)."""
    runner = [sys.executable, "-m", "forgeml.jobs._task", str(job_dir), "--", *command]
    lines = [
        "#!/bin/bash",
        f"# {title}",
        "# Written by forgeml.jobs. The environment (secrets, tracking settings) comes from the",
        "# submitting process (sbatch --export=ALL) and is never written here.",
        *(f"#SBATCH {option}" for option in options),
        "",
        "exec " + shlex.join(runner),
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- launch


def _secret_names(secrets: bool | Sequence[str] | None) -> bool | list[str]:
    """``secrets`` as True (every stored secret) or a list of names ([]: none)."""
    if secrets is None or secrets is False:
        return []
    if secrets is True:
        return True
    if isinstance(secrets, str):
        return [secrets]
    return [str(n) for n in secrets]


def _job_env(env: Mapping[str, str] | None, secrets: bool | list[str]) -> dict[str, str]:
    result = dict(os.environ)
    if secrets:
        from forgeml.secrets import SecretStore, inject

        store = SecretStore()
        if secrets is not True or store.path.exists():
            names = None if secrets is True else secrets
            result = inject(result, names=names, store=store)
    result.update({str(k): str(v) for k, v in (env or {}).items()})
    return result


def default_name(command: Sequence[str]) -> str:
    """A job name from a command: the script (``train`` for ``python train.py``), the module
    (``python -m pkg.train``), else the program's name."""
    words = [str(c) for c in command]
    if words and Path(words[0]).name.startswith("python"):
        if len(words) > 2 and words[1] == "-m":
            return words[2].rsplit(".", 1)[-1] or "job"
        for word in words[1:]:
            if word.endswith(".py"):
                return Path(word).stem or "job"
    name = Path(words[0]).name if words else ""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "job"


def launch(
    command: Sequence[str],
    *,
    overrides: Sequence[Sequence[str]] | None = None,
    name: str | None = None,
    time: str | None = None,
    partition: str | None = None,
    gpus: int | None = None,
    array_parallelism: int | None = None,
    requeue: bool = False,
    env: Mapping[str, str] | None = None,
    nodes: int | None = None,
    ntasks_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem: str | None = None,
    nodelist: str | None = None,
    constraint: str | None = None,
    signal_seconds: int = SIGNAL_SECONDS,
    max_restarts: int = MAX_RESTARTS,
    srun: bool = False,
    secrets: bool | Sequence[str] | None = None,
    export: Sequence[str] = (),
    relaunch_of: Mapping[str, Any] | None = None,
    resume: Mapping[str, Any] | None = None,
    sbatch_args: Sequence[str] = (),
) -> Job:
    """Submit ``command`` as one Slurm job, or as one job array when ``overrides`` is given.

    Task ``i`` of the array runs ``command`` followed by the words of ``overrides[i]`` (for an
    ``app.run`` program: ``python prog.py --cfg app.yml lr=1e-3``). ``env`` and the secrets of
    :mod:`forgeml.secrets` named in ``secrets`` (default: none; ``True``: every stored secret)
    reach the job's environment through sbatch, never the script file. Slurm keeps a job's
    environment in its state files: export only the secrets the job needs. With ``requeue``,
    Slurm sends SIGUSR1 ``signal_seconds`` before the time limit; the task checkpoints
    (``app.on_checkpoint``, ``app.checkpoint_requested``) and requeues itself, at most
    ``max_restarts`` times. ``srun`` runs the command under ``srun`` (one process per Slurm
    task: ``--dist slurm``).
    ``sbatch_args`` go on the sbatch command line (``--hold``, ``--dependency=afterok:17``).
    """
    words = [str(c) for c in command]
    if not words:
        raise JobsError(
            "The command to launch is empty. Example: ['python', 'train.py', '--cfg', 'app.yml']."
        )
    sets = [[str(o) for o in s] for s in overrides] if overrides is not None else []
    if overrides is not None and not sets:
        raise JobsError("overrides is an empty list: give at least one argument set, or None.")
    if array_parallelism is not None and int(array_parallelism) < 1:
        raise JobsError(
            f"--array-parallelism must be a positive integer. Got {array_parallelism!r}."
        )
    if int(max_restarts) < 0:
        raise JobsError(f"max_restarts must be 0 or more. Got {max_restarts!r}.")
    secret_names = _secret_names(secrets)
    job_env = _job_env(env, secret_names)
    missing = [n for n in export if n not in job_env]
    if missing:
        raise JobsError(
            f"--slurm-export names variables that are not set here: {', '.join(missing)}. "
            f"Set them before launching, or drop them from the list."
        )
    name = name or default_name(words)
    key = f"{time_module.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    job_dir = jobs_dir() / key
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)
    (job_dir / "tasks").mkdir(exist_ok=True)
    is_array = bool(sets)
    array = None
    if is_array:
        array = f"0-{len(sets) - 1}" + (f"%{int(array_parallelism)}" if array_parallelism else "")
    output = job_dir / "logs" / ("%A_%a.out" if is_array else "%j.out")
    options = sbatch_options(
        name=name,
        array=array,
        time_limit=time,
        partition=partition,
        gpus=gpus,
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        cpus_per_task=cpus_per_task,
        mem=mem,
        nodelist=nodelist,
        constraint=constraint,
        requeue=requeue,
        signal_seconds=signal_seconds,
    )
    record: dict[str, Any] = {
        "name": name,
        "command": words,
        "sets": sets,
        "array": is_array,
        "tasks": len(sets) if is_array else 1,
        "options": options,
        "requeue": bool(requeue),
        "max_restarts": int(max_restarts),
        "srun": bool(srun),
        "cwd": os.getcwd(),
        "launch": {
            "time": time,
            "partition": partition,
            "gpus": gpus,
            "array_parallelism": array_parallelism,
            "nodes": nodes,
            "ntasks_per_node": ntasks_per_node,
            "cpus_per_task": cpus_per_task,
            "mem": mem,
            "nodelist": nodelist,
            "constraint": constraint,
            "signal_seconds": signal_seconds,
        },
        "env_names": sorted(set(env or {})),
        "secrets": secret_names,  # names only (True: all), for relaunch
        "cluster": _slurm.cluster_name(),
    }
    if relaunch_of:
        record["relaunch_of"] = dict(relaunch_of)
    script = job_dir / "job.sh"
    atomic_write_text(script, render_script(options, job_dir, words, f"forgeml job {name!r}"))
    script.chmod(0o755)
    write_json(job_dir / "job.json", record)
    if resume:  # relaunch: the task starts from this tracking run and checkpoint
        write_json(task_state_path(job_dir, 0), {**dict(resume), "restarts": 0})
    try:
        job_id = _slurm.sbatch(
            script, [f"--output={output}", *(str(a) for a in sbatch_args)], env=job_env
        )
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)  # nothing was submitted: leave no record
        raise
    record.update(id=job_id, submitted=time_module.time())
    write_json(job_dir / "job.json", record)
    record["dir"] = str(job_dir)
    return Job.from_record(record)


time_module = time  # ``time`` is also a parameter name of launch()


# ----------------------------------------------------------------------------- status


def _job_ids(jobs: str | Job | Iterable[str | Job]) -> list[str]:
    items = [jobs] if isinstance(jobs, str | Job) else list(jobs)
    ids = []
    for item in items:
        text = item.id if isinstance(item, Job) else str(item).partition("_")[0].strip()
        if not text.isdigit():
            raise JobsError(
                f"A Slurm job id is a number (or JOB_TASK for an array task). Got {item!r}."
            )
        ids.append(text)
    return ids


def status(job_ids: str | Job | Iterable[str | Job]) -> dict[str, TaskStatus]:
    """``{"JOB" or "JOB_TASK": TaskStatus}`` for every task of the jobs, in one Slurm call."""
    return _slurm.query(_job_ids(job_ids))


def wait(job: Job | str, *, timeout: float = 600.0, poll: float = 0.5) -> dict[str, TaskStatus]:
    """Poll until every task of ``job`` has finished (one query per poll); their statuses.

    JobsError after ``timeout`` seconds, naming the tasks still going.
    """
    if not isinstance(job, Job):
        job = Job.from_record(find_record(job))
    deadline = time_module.monotonic() + timeout
    while True:
        found = status(job)
        pending = [k for k in job.task_keys() if k not in found or not found[k].done]
        if not pending:
            return {k: found[k] for k in job.task_keys()}
        if time_module.monotonic() > deadline:
            states = ", ".join(
                f"{k} {found[k].state if k in found else 'UNKNOWN'}" for k in pending[:5]
            )
            raise JobsError(f"Job {job.id} did not finish in {timeout:g} s: {states}.")
        time_module.sleep(poll)


def cancel(job: str) -> None:
    """Cancel ``JOB`` or ``JOB_TASK`` at once (``scancel``)."""
    _job_ids(job)
    _slurm.call("scancel", [str(job)])


def stop(job: str) -> None:
    """Ask ``JOB`` (or ``JOB_TASK``) to stop gracefully: SIGTERM to its batch step, whose task
    runner passes it on; ``app.run`` programs call their checkpoint hooks and end their run."""
    _job_ids(job)
    _slurm.call("scancel", ["--signal=TERM", "--batch", str(job)])


def signal_requeue(job: str) -> None:
    """Send the requeue signal (SIGUSR1) now, as Slurm does before the time limit."""
    _job_ids(job)
    _slurm.call("scancel", ["--signal=USR1", "--batch", str(job)])


#: Seconds between a requeued job's last run ending and its restart. slurmd revokes the
#: job's credential when the run is killed, with one-second resolution: a credential issued
#: within the same second is refused ("Job credential revoked") and the job ends FAILED.
RESTART_SETTLE_SECONDS = 2.0


def start_now(job: str, *, timeout: float = 60.0) -> None:
    """Lift the hold Slurm puts on a requeued job (about 2 minutes) so it starts at once.

    Waits first until the job is back in the queue (PENDING, its last run no longer
    COMPLETING) and :data:`RESTART_SETTLE_SECONDS` more: restarting sooner races slurmd's
    clean-up of the last run, which refuses the new one.
    """
    _job_ids(job)
    deadline = time.monotonic() + timeout
    while True:
        done = _slurm.call("squeue", ["-h", "-j", job, "-o", "%T"], check=False, timeout=10)
        states = set(done.stdout.split())
        if "PENDING" in states and "COMPLETING" not in states:
            break
        if time.monotonic() > deadline:
            found = ", ".join(sorted(states)) or "not in the queue"
            raise JobsError(
                f"Job {job} is not waiting to restart after {timeout:g} s (state: {found}). "
                f"start_now lifts the hold of a requeued job; check it with "
                f"'forgeml jobs status {job}'."
            )
        time.sleep(0.2)
    time.sleep(RESTART_SETTLE_SECONDS)
    _slurm.call("scontrol", ["update", f"JobId={job}", "StartTime=now"])


def log_path(job: str) -> Path:
    """The output file of ``JOB`` (a single job) or ``JOB_TASK`` (an array task)."""
    record = find_record(job)
    job_id, _, task = str(job).partition("_")
    logs = Path(record["dir"]) / "logs"
    if record.get("array"):
        if not task:
            raise JobsError(
                f"Job {job_id} is an array of {record.get('tasks')} tasks: name one, "
                f"e.g. {job_id}_0."
            )
        if not task.isdigit() or int(task) >= int(record.get("tasks", 0)):
            raise JobsError(
                f"Job {job_id} has tasks 0..{int(record.get('tasks', 1)) - 1}. Got task {task!r}."
            )
        return logs / f"{job_id}_{task}.out"
    return logs / f"{job_id}.out"


# ----------------------------------------------------------------------------- listing, relaunch


def list_jobs(refresh: bool = True) -> list[dict[str, Any]]:
    """Every launch forgeml recorded, newest last, with each task's run and (one Slurm query
    for them all) its state.

    Slurm reuses job ids: only the newest launch of an id on this cluster gets Slurm's state;
    older ones (and launches on another cluster) read ``UNKNOWN``.
    """
    from forgeml.jobs._records import all_records, same_cluster

    records = all_records()
    latest: dict[str, dict[str, Any]] = {}
    if refresh and records:
        cluster = _slurm.cluster_name()
        for record in records:  # oldest first: the newest launch of an id wins
            if same_cluster(record, cluster):
                latest[str(record["id"])] = record
    found = _slurm.query(list(latest)) if latest else {}
    rows = []
    for record in records:
        job = Job.from_record(record)
        states = task_states(record)
        current = latest.get(job.id) is record
        tasks = []
        for index, key in enumerate(job.task_keys()):
            state = states.get(index, {})
            slurm = found.get(key) if current else None
            tasks.append(
                {
                    "id": key,
                    "state": slurm.state if slurm else ("UNKNOWN" if refresh else ""),
                    "run_id": state.get("run_id"),
                    "checkpoint": state.get("checkpoint"),
                    "restarts": state.get("restarts", 0),
                    "exit_code": state.get("exit_code"),
                    "overrides": job.sets[index] if job.array else [],
                }
            )
        rows.append(
            {
                "id": job.id,
                "name": job.name,
                "tasks": tasks,
                "command": job.command,
                "dir": str(job.dir),
                "submitted": record.get("submitted"),
                "relaunch_of": record.get("relaunch_of"),
            }
        )
    return rows


def find_run(run_id: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The launch, task index and task state that produced tracking run ``run_id``."""
    from forgeml.jobs._records import all_records

    records = all_records()
    for record in reversed(records):
        for index, state in task_states(record).items():
            if state.get("run_id") == run_id:
                return record, index, state
    raise JobsError(
        f"No job launched by forgeml under {jobs_dir()} produced tracking run {run_id!r}. "
        f"'forgeml jobs ls' lists the jobs with their runs."
    )


def relaunch(run_id: str, *, env: Mapping[str, str] | None = None, **changes: Any) -> Job:
    """Submit again the task that produced tracking run ``run_id``: same command and
    overrides, resuming that run and its last checkpoint (``cfg.resume``)."""
    record, index, state = find_run(run_id)
    options = dict(record.get("launch", {}))
    options.pop("array_parallelism", None)
    options.update(changes)
    command = list(record["command"])
    if record.get("array"):
        command += list(record["sets"][index])
    job = launch(
        command,
        name=record.get("name"),
        requeue=bool(record.get("requeue")),
        max_restarts=int(record.get("max_restarts", MAX_RESTARTS)),
        srun=bool(record.get("srun")),
        env=env,
        secrets=options.pop("secrets", record.get("secrets") or None),
        relaunch_of={"job": str(record["id"]), "task": index, "run_id": run_id},
        resume={k: state[k] for k in ("run_id", "checkpoint") if state.get(k)},
        time=options.pop("time", None),
        **options,
    )
    return job
