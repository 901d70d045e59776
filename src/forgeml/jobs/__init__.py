"""Slurm jobs: launch commands and argument sweeps as job arrays, watch, stop and relaunch them.

:func:`launch` writes an sbatch script (every word quoted, no values of secrets or
settings in it) and submits it; each task of an array gets its own overrides and its
own tracking run. :func:`status` asks Slurm once for every task (``sacct`` with
accounting, else ``squeue`` and the job-completion log). With ``requeue=True`` a job
checkpoints before its time limit (``app.on_checkpoint``) and requeues itself; the
restart resumes its tracking run from ``cfg.resume``. :func:`render_k8s` and
:func:`render_apptainer` write the same launch for Kubernetes and Apptainer.
"""

from forgeml._core._errors import JobsError
from forgeml.jobs._launch import (
    MAX_RESTARTS,
    SIGNAL_SECONDS,
    Job,
    cancel,
    find_run,
    grid,
    launch,
    list_jobs,
    load_sets,
    log_path,
    relaunch,
    render_script,
    sbatch_options,
    signal_requeue,
    start_now,
    status,
    stop,
    wait,
)
from forgeml.jobs._records import jobs_dir
from forgeml.jobs._render import render_apptainer, render_k8s
from forgeml.jobs._runtime import in_allocation, slurm_worker_env, submit_app
from forgeml.jobs._slurm import FINAL_STATES, TaskStatus, accounting_enabled, query

__all__ = [
    "FINAL_STATES",
    "MAX_RESTARTS",
    "SIGNAL_SECONDS",
    "Job",
    "JobsError",
    "TaskStatus",
    "accounting_enabled",
    "cancel",
    "find_run",
    "grid",
    "in_allocation",
    "jobs_dir",
    "launch",
    "list_jobs",
    "load_sets",
    "log_path",
    "query",
    "relaunch",
    "render_apptainer",
    "render_k8s",
    "render_script",
    "sbatch_options",
    "signal_requeue",
    "slurm_worker_env",
    "start_now",
    "status",
    "stop",
    "submit_app",
    "wait",
]
