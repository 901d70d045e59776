"""The task runner a forgeml job script execs: ``python -m forgeml.jobs._task JOB_DIR -- CMD...``.

Inside the allocation it picks the task's argument set (``SLURM_ARRAY_TASK_ID``), resumes
the task's tracking run and checkpoint when it has them (a requeue or a relaunch:
``MLFLOW_RUN_ID``, ``FORGEML_RESUME``), runs the command (under ``srun`` for ``--dist
slurm``) and passes SIGTERM and SIGUSR1 on to it. After the requeue signal (SIGUSR1, sent
by Slurm before the time limit) the command saves a checkpoint and exits; the runner then
requeues the job (``scontrol requeue``) unless the task restarted ``max_restarts`` times.
It imports no ML framework.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from forgeml._core._errors import JobsError
from forgeml.jobs import _slurm
from forgeml.jobs._records import (
    INNER_VAR,
    JOB_DIR_VAR,
    REQUEUE_EXIT,
    REQUEUE_VAR,
    RESUME_VAR,
    SIGNAL_SECONDS_VAR,
    STATE_VAR,
    read_json,
    task_state_path,
    update_json,
)

#: How long the runner waits, after ``scontrol requeue``, for Slurm to take the job back.
REQUEUE_WAIT_SECONDS = 60.0


def _log(message: str) -> None:
    print(f"[forgeml.jobs {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m forgeml.jobs._task JOB_DIR -- COMMAND...", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    command = argv[2:]
    record = read_json(job_dir / "job.json")
    task = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0) if record.get("array") else 0
    if record.get("array"):
        command = [*command, *record["sets"][task]]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    state_path = task_state_path(job_dir, task)
    state = read_json(state_path)
    env = dict(os.environ)
    env.update({JOB_DIR_VAR: str(job_dir), STATE_VAR: str(state_path), "FORGEML_TASK": str(task)})
    env.pop(RESUME_VAR, None)
    if state.get("run_id"):
        env["MLFLOW_RUN_ID"] = str(state["run_id"])
    if state.get("checkpoint"):
        env[RESUME_VAR] = str(state["checkpoint"])
    requeue = bool(record.get("requeue"))
    if requeue:
        env[REQUEUE_VAR] = "1"
        signal_seconds = (record.get("launch") or {}).get("signal_seconds")
        if signal_seconds:
            env[SIGNAL_SECONDS_VAR] = str(int(signal_seconds))
    if record.get("srun"):
        env[INNER_VAR] = "1"
        command = ["srun", "--kill-on-bad-exit=1", "--export=ALL", *command]
    slurm_job = os.environ.get("SLURM_JOB_ID", "")
    update_json(
        state_path,
        task=task,
        slurm_job_id=slurm_job,
        restarts=restarts,
        host=socket.gethostname(),
        started=time.time(),
        state="RUNNING",
    )
    _log(
        f"task {task} of job {os.environ.get('SLURM_ARRAY_JOB_ID', slurm_job)} "
        f"(restart {restarts}): {shlex.join(command)}"
        + (f"; resuming run {state['run_id']}" if state.get("run_id") else "")
        + (f" from {state['checkpoint']}" if state.get("checkpoint") else "")
    )
    # The handlers go in before the child starts: a signal that arrives while it starts is
    # remembered and passed on as soon as the child exists, never lost.
    signals: list[int] = []
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        if children and children[0].poll() is None:
            children[0].send_signal(signum)

    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGTERM, forward)
    child = subprocess.Popen(command, env=env)
    children.append(child)
    for signum in dict.fromkeys(signals):  # arrived before the child existed
        if child.poll() is None:
            child.send_signal(signum)
    code = child.wait()
    asked = signal.SIGUSR1 in signals
    if requeue and (asked or code == REQUEUE_EXIT):
        limit = int(record.get("max_restarts", 3))
        if restarts < limit:
            update_json(state_path, state="REQUEUED", requeued=time.time(), exit_code=code)
            _log(
                f"checkpointed (exit {code}); requeueing job {slurm_job} "
                f"(restart {restarts + 1} of {limit})"
            )
            try:
                done = _slurm.call("scontrol", ["requeue", slurm_job], check=False)
                failure = "" if done.returncode == 0 else (done.stderr or done.stdout).strip()
            except JobsError as exc:
                failure = str(exc)
            if not failure:
                _wait_for_requeue(slurm_job)
                return 0
            _log(f"scontrol requeue failed: {failure}")
        else:
            _log(f"the task restarted {restarts} times (max_restarts {limit}); not requeueing")
    update_json(state_path, state="DONE", finished=time.time(), exit_code=code)
    return code if code >= 0 else 128 - code


def _wait_for_requeue(job: str, timeout: float = REQUEUE_WAIT_SECONDS) -> None:
    """Wait until Slurm has taken the job back (it is no longer RUNNING).

    ``scontrol requeue`` answers at once, and Slurm then ends this allocation (it signals
    this script). Leaving before that, while the job still reads RUNNING, would let the
    batch script's exit race the requeue and the job could be recorded as COMPLETED.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = _slurm.call("squeue", ["-h", "-j", job, "-o", "%T"], check=False, timeout=10)
        except JobsError:
            return
        states = set(done.stdout.split())
        if done.returncode != 0 or "RUNNING" not in states:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
