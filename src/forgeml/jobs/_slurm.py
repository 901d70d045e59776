"""Slurm's commands, called with argument lists: submit, query (one call for all jobs), signal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forgeml._core._errors import JobsError

#: States after which a job (task) never runs again (unless requeued by hand).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

_TIMEOUT = 60.0

#: Where Slurm's commands are looked for when they are not on ``PATH`` (tests empty it).
FALLBACK_DIRS: tuple[str, ...] = ("/usr/bin",)


def slurm_binary(name: str) -> str:
    """The path of Slurm command ``name``; JobsError saying how to get it when it is missing."""
    found = shutil.which(name)
    if found is None:
        found = next(
            (f"{d}/{name}" for d in FALLBACK_DIRS if os.access(f"{d}/{name}", os.X_OK)), None
        )
    if found is None:
        raise JobsError(
            f"The Slurm command '{name}' is not on PATH. forgeml.jobs needs a Slurm client "
            f"(sbatch, squeue, scontrol, scancel). HINT: run on a Slurm login node, or start "
            f"the local test cluster: scripts/slurm-local install && scripts/slurm-local start."
        )
    return found


def call(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = _TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run Slurm command ``name`` with ``args`` (a list, never a shell string)."""
    argv = [slurm_binary(name), *args]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise JobsError(
            f"'{name}' did not answer in {timeout:g} s (is slurmctld running? "
            f"SLURM_CONF={os.environ.get('SLURM_CONF', '<unset>')})."
        ) from None
    if check and done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise JobsError(
            f"{name} {' '.join(args[:6])}{' ...' if len(args) > 6 else ''} failed: {message}"
        )
    return done


def sbatch(script: Path, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None) -> str:
    """Submit ``script``; its job id. ``env`` is the job's environment (never in the file)."""
    done = call("sbatch", ["--parsable", *args, str(script)], env=env)
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise JobsError(f"sbatch answered {done.stdout.strip()!r}, not a job id.")
    return job_id


@dataclass
class TaskStatus:
    """The state of one job or array task, from squeue, scontrol, sacct or the completion log."""

    job_id: str
    task: int | None
    state: str
    reason: str = ""
    elapsed: str = ""
    exit_code: str = ""
    node: str = ""
    source: str = "squeue"

    @property
    def key(self) -> str:
        """``JOB`` or ``JOB_TASK``."""
        return self.job_id if self.task is None else f"{self.job_id}_{self.task}"

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.key, **asdict(self), "done": self.done}


def _parse_task(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _task_range(text: str) -> list[int | None]:
    """Array indices of a squeue field: ``3``, ``0-3``, ``[0-3%2]``, ``1,4-5``; [None] if none."""
    text = text.strip().strip("[]").split("%")[0]
    if not text or text in ("N/A", "(null)"):
        return [None]
    indices: list[int | None] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            indices.extend(range(int(low), int(high or low) + 1))
    return indices or [None]


def squeue(job_ids: Iterable[str]) -> dict[str, TaskStatus]:
    """One ``squeue`` call for every job in ``job_ids`` (array tasks expanded), ``{key: status}``.

    Jobs the controller still remembers (``MinJobAge``) are listed with their final state.
    """
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    done = call(
        "squeue",
        ["-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%F|%K|%T|%r|%M|%N"],
        check=False,
    )
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise JobsError(f"squeue failed: {done.stderr.strip()}")
    found: dict[str, TaskStatus] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        job, task, state, reason, elapsed, node = parts
        for index in _task_range(task):
            status = TaskStatus(job, index, state, reason, elapsed, "", node)
            found[status.key] = status
    return found


_configs: dict[str | None, dict[str, str]] = {}


def slurm_config(conf: str | None = None) -> dict[str, str]:
    """``scontrol show config`` as a mapping, cached per ``SLURM_CONF`` once scontrol answered
    (a failure, e.g. the controller still starting, is asked again next time); {} on failure."""
    if conf in _configs:
        return _configs[conf]
    try:
        done = call("scontrol", ["show", "config"], check=False, timeout=20.0)
    except JobsError:
        return {}
    config: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    if done.returncode == 0 and config:
        _configs[conf] = config
    return config


def clear_config_cache() -> None:
    """Forget the cached ``scontrol show config`` answers (a cluster was restarted)."""
    _configs.clear()


def _config() -> dict[str, str]:
    return slurm_config(os.environ.get("SLURM_CONF"))


def cluster_name() -> str | None:
    """The cluster the Slurm commands talk to: ``ClusterName`` of its ``slurm.conf``
    (``SLURM_CONF``, else /etc/slurm/slurm.conf) with that file's path, since job ids restart
    on a fresh cluster of the same name; None when there is no readable slurm.conf
    (a configless client). Read from the file: no controller needs to answer."""
    conf = Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf").absolute()
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"^\s*ClusterName\s*=\s*(\S+)", text, re.IGNORECASE | re.MULTILINE)
    return f"{match.group(1) if match else ''}@{conf}"


def accounting_enabled() -> bool:
    """True when the cluster keeps accounting (``sacct`` answers); else jobcomp and squeue."""
    return (
        _config().get("AccountingStorageType", "accounting_storage/none")
        not in (
            "",
            "accounting_storage/none",
        )
        and shutil.which("sacct") is not None
    )


def sacct(job_ids: Iterable[str]) -> dict[str, TaskStatus]:
    """One ``sacct`` call for every job in ``job_ids`` (allocations only), ``{key: status}``."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    done = call(
        "sacct",
        ["-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,Elapsed,ExitCode,NodeList"],
        check=False,
    )
    found: dict[str, TaskStatus] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or "[" in parts[0]:
            continue
        job, _, task = parts[0].partition("_")
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        status = TaskStatus(
            job, _parse_task(task), state, "", parts[2], parts[3], parts[4], "sacct"
        )
        found[status.key] = status
    return found


def jobcomp(job_ids: Iterable[str]) -> dict[str, TaskStatus]:
    """Final states from the job-completion log (``JobCompType=jobcomp/filetxt``), if any."""
    config = _config()
    location = config.get("JobCompLoc", "")
    if config.get("JobCompType") != "jobcomp/filetxt" or not location:
        return {}
    try:
        text = Path(location).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    wanted = {str(j) for j in job_ids}
    found: dict[str, TaskStatus] = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        job_id = fields.get("JobId", "")
        array_job = fields.get("ArrayJobId", "")
        if array_job and array_job != job_id and array_job in wanted:
            # jobcomp names array tasks by their own job id; keep both spellings.
            task = _parse_task(fields.get("ArrayTaskId", ""))
            key_job = array_job
        elif job_id in wanted:
            task, key_job = None, job_id
        else:
            continue
        state = fields.get("JobState", "UNKNOWN")
        status = TaskStatus(
            key_job,
            task,
            state,
            "",
            "",
            fields.get("ExitCode", ""),
            fields.get("NodeList", ""),
            "jobcomp",
        )
        found[status.key] = status  # later lines (a requeued job's last run) win
    return found


def query(job_ids: Iterable[str]) -> dict[str, TaskStatus]:
    """The state of every task of ``job_ids``: one ``sacct`` call with accounting, else one
    ``squeue`` call, completed by the job-completion log for jobs the controller forgot."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    if accounting_enabled():
        found = sacct(ids)
        live = squeue(ids)  # sacct lags a little behind the controller for running jobs
        found.update({k: v for k, v in live.items() if not v.done or k not in found})
        return found
    found = squeue(ids)
    jobs_seen = {s.job_id for s in found.values()}
    missing = [j for j in ids if j not in jobs_seen]
    if missing:
        found.update(jobcomp(missing))
    return found


def hostnames(nodelist: str) -> list[str]:
    """The hosts of a Slurm node list (``gpu[01-03,07],cpu1``), by ``scontrol show hostnames``;
    parsed here when scontrol cannot answer (no Slurm client configured)."""
    try:
        done = call("scontrol", ["show", "hostnames", nodelist])
    except JobsError:
        return expand_nodelist(nodelist)
    return [h for h in done.stdout.split() if h]


def expand_nodelist(nodelist: str) -> list[str]:
    """``gpu[01-03,07],cpu1`` -> ``gpu01 gpu02 gpu03 gpu07 cpu1`` (one bracket per name)."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,]*)", nodelist):
        prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if high:
                width = len(low)
                hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(low), int(high) + 1)]
            else:
                hosts.append(f"{prefix}{low}{suffix}")
    return hosts
