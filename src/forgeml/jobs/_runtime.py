"""``--dist slurm``: submit the same command as a job, and set up each task inside it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from forgeml._core._env import nvidia_gpu_count
from forgeml._core._errors import JobsError
from forgeml.app._dist import DEFAULT_DIST_PORT
from forgeml.jobs._launch import MAX_RESTARTS, SIGNAL_SECONDS, Job, launch
from forgeml.jobs._records import INNER_VAR
from forgeml.jobs._slurm import hostnames

log = logging.getLogger("forgeml.jobs")


def in_allocation() -> bool:
    """True in a task started by a ``--dist slurm`` job (``srun`` under forgeml's runner)."""
    return os.environ.get(INNER_VAR) == "1" and "SLURM_PROCID" in os.environ


def app_command(argv: Sequence[str] | None = None) -> list[str]:
    """The command that started this program, to run again inside the allocation."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0] or argv[0] == "-c":
        raise JobsError(
            "--dist slurm runs the program's command line again inside the job, but this "
            "process has none (python -c or an interactive session). Run a script: "
            "python program.py --cfg app.yml --dist slurm."
        )
    script = os.path.abspath(argv[0])
    return [sys.executable, script, *argv[1:]]


def submit_app(cfg: Mapping[str, Any], argv: Sequence[str] | None = None) -> Job:
    """Submit this program's command line from its ``slurm_*`` options; the job."""
    export = [n.strip() for n in str(cfg.get("slurm_export") or "").split(",") if n.strip()]
    gpus = cfg.get("slurm_gpus")
    job = launch(
        app_command(argv),
        name=cfg.get("slurm_job_name") or None,
        partition=cfg.get("slurm_partition") or None,
        nodes=int(cfg.get("slurm_nodes") or 1),
        ntasks_per_node=int(cfg.get("slurm_ntasks_per_node") or 1),
        cpus_per_task=int(cfg.get("slurm_cpus_per_task") or 1),
        mem=str(cfg.get("slurm_mem") or "") or None,
        time=str(cfg.get("slurm_time") or "0"),
        nodelist=cfg.get("slurm_nodelist") or None,
        constraint=cfg.get("slurm_constraint") or None,
        gpus=int(gpus) if gpus else None,
        requeue=bool(cfg.get("slurm_requeue")),
        signal_seconds=int(cfg.get("slurm_signal_seconds") or SIGNAL_SECONDS),
        max_restarts=int(cfg.get("slurm_max_restarts", MAX_RESTARTS)),
        export=export,
        srun=True,
    )
    return job


def slurm_worker_env(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Map this Slurm task onto torch.distributed's variables and pin its GPU; what was set.

    ``SLURM_PROCID`` -> ``RANK``, ``SLURM_NTASKS`` -> ``WORLD_SIZE``, ``SLURM_LOCALID`` ->
    ``LOCAL_RANK``, the first host of ``SLURM_JOB_NODELIST`` (``scontrol show hostnames``)
    -> ``MASTER_ADDR``; ``MASTER_PORT`` is ``--dist-port`` when given, else (None, or 0) one
    derived from the job id, the same on every node of the job.
    With GPUs on the node, ``CUDA_VISIBLE_DEVICES`` keeps the local rank's GPU only.
    """
    env = os.environ
    try:
        rank = int(env["SLURM_PROCID"])
        world = int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or 1)
        local = int(env.get("SLURM_LOCALID") or 0)
    except (KeyError, ValueError) as exc:
        raise JobsError(f"This Slurm task's environment is incomplete or invalid: {exc}.") from None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "localhost"
    hosts = hostnames(nodelist) or ["localhost"]
    given = cfg.get("dist_port")
    port = 0 if given is None else int(given)
    # The launcher's default port (25900) counts as not chosen: two jobs on one node would
    # both take it. Every task of a job must agree without talking: derive it from the job.
    # (--dist-port with another number is used as given.)
    if port in (0, DEFAULT_DIST_PORT):
        job_id = int(env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID") or 0)
        port = 20000 + job_id % 20000
    values = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local),
        "MASTER_ADDR": hosts[0],
        "MASTER_PORT": str(port),
    }
    if not cfg.get("no_gpu") and nvidia_gpu_count() > 0:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if not visible:
            visible = [str(i) for i in range(nvidia_gpu_count())]
        values["CUDA_VISIBLE_DEVICES"] = visible[local % len(visible)]
    os.environ.update(values)
    log.debug("slurm task %d of %d on %s: %s", rank, world, hosts[0], values)
    return values
