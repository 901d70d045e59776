"""What forgeml remembers of the jobs it launched: one folder per launch under the forgeml home.

``<forgeml home>/jobs/<key>/`` holds ``job.json`` (the launch: command, argument sets,
options, Slurm job id), ``job.sh`` (the sbatch script), ``logs/`` (one file per task) and
``tasks/<i>.json`` (each task's tracking run, checkpoint, restarts and exit code, written
by the task itself). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from forgeml._core._env import forgeml_home
from forgeml._core._errors import JobsError, did_you_mean
from forgeml._core._files import atomic_write_text

# The one home of these names: forgeml.app (the launcher side of a job) imports them lazily.
#: The environment variables a task of a forgeml job sees (besides Slurm's own).
JOB_DIR_VAR = "FORGEML_JOB_DIR"
STATE_VAR = "FORGEML_JOB_STATE"
RESUME_VAR = "FORGEML_RESUME"
REQUEUE_VAR = "FORGEML_JOB_REQUEUE"
INNER_VAR = "FORGEML_SLURM_INNER"
#: Seconds between Slurm's requeue signal and the time limit (the task's checkpoint budget).
SIGNAL_SECONDS_VAR = "FORGEML_JOB_SIGNAL_SECONDS"
#: The exit status of a task that saved a checkpoint on the requeue signal and wants to restart.
REQUEUE_EXIT = 75


def jobs_dir() -> Path:
    """Where launch folders live: ``$FORGEML_JOBS_DIR`` or ``<forgeml home>/jobs``."""
    explicit = os.environ.get("FORGEML_JOBS_DIR")
    return Path(explicit).expanduser().absolute() if explicit else forgeml_home() / "jobs"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise JobsError(f"Cannot read {path}: {exc}. Remove the file if it is damaged.") from None
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def update_json(path: Path, **values: Any) -> dict[str, Any]:
    """Read ``path``, set ``values`` and write it back atomically; the new contents."""
    data = read_json(path)
    data.update(values)
    write_json(path, data)
    return data


def task_state_path(job_dir: Path, task: int) -> Path:
    return job_dir / "tasks" / f"{task}.json"


def all_records() -> list[dict[str, Any]]:
    """Every launch recorded under :func:`jobs_dir`, oldest first."""
    root = jobs_dir()
    if not root.is_dir():
        return []
    records = []
    for path in root.glob("*/job.json"):
        record = read_json(path)
        if record.get("id"):
            record["dir"] = str(path.parent)
            records.append(record)
    records.sort(key=lambda r: (float(r.get("submitted", 0)), int(str(r["id"]))))
    return records


def same_cluster(record: dict[str, Any], cluster: str | None) -> bool:
    """False only when both the record and ``cluster`` name a cluster and they differ."""
    recorded = record.get("cluster")
    return not recorded or cluster is None or recorded == cluster


def find_record(job: str, cluster: str | None = None) -> dict[str, Any]:
    """The newest launch of Slurm job ``job`` (``JOB`` or ``JOB_TASK``) on this cluster;
    JobsError listing the known ids.

    Slurm reuses job ids (a fresh local cluster starts again at 1), so records are searched
    newest first and, when Slurm names its cluster (``ClusterName`` and ``SLURM_CONF``),
    launches recorded on another cluster are skipped.
    """
    job_id = str(job).partition("_")[0].strip()
    records = all_records()
    candidates: list[dict[str, Any]] = [r for r in reversed(records) if str(r["id"]) == job_id]
    if cluster is None and any(r.get("cluster") for r in candidates):
        from forgeml.jobs._slurm import cluster_name

        cluster = cluster_name()
    for record in candidates:
        if same_cluster(record, cluster):
            return record
    known = [str(r["id"]) for r in records if same_cluster(r, cluster)]
    listed = ", ".join(known[-10:]) if known else "none yet"
    raise JobsError(
        f"No job {job!r} was launched by forgeml under {jobs_dir()}. Known: {listed}."
        + did_you_mean(job_id, known)
        + " Run 'forgeml jobs ls' to list them."
    )


def task_states(record: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """``{task index: state}`` of a launch, for the tasks that have started."""
    job_dir = Path(record["dir"])
    states = {}
    for path in sorted((job_dir / "tasks").glob("*.json")):
        if path.stem.isdigit():
            states[int(path.stem)] = read_json(path)
    return states
