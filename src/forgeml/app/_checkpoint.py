"""Checkpoint hooks and the signals of a forgeml job: requeue before the time limit, stop.

Inside a task of a job launched by ``forgeml jobs`` (or ``--dist slurm``), ``app.run``:

- sets ``cfg.resume`` to the checkpoint a requeued or relaunched task resumes from (None
  on a first start) and records the task's tracking run, so a restart continues it;
- on SIGUSR1 (Slurm's warning before the time limit, with ``--requeue``) calls the hooks
  registered with :func:`on_checkpoint`, records the checkpoint they return and exits with
  status 75; the task runner then requeues the job;
- on SIGTERM (``forgeml jobs stop``) calls the hooks too, then stops as if interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from forgeml._core._env import is_rank_zero

log = logging.getLogger("forgeml.app")

F = TypeVar("F", bound=Callable[[], Any])

_hooks: list[Callable[[], Any]] = []

# The names forgeml.jobs uses (forgeml.jobs._records); repeated so the launcher stays small.
_STATE_VAR = "FORGEML_JOB_STATE"
_RESUME_VAR = "FORGEML_RESUME"
_REQUEUE_VAR = "FORGEML_JOB_REQUEUE"
REQUEUE_EXIT = 75


def on_checkpoint(fn: F) -> F:
    """Register ``fn()`` to save a checkpoint when the job must stop (requeue or stop).

    ``fn`` returns the path it saved (the next start of the task gets it as
    ``cfg.resume``), or None. Hooks run in the order registered; the last path wins.
    Usable as a decorator; returns ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"app.on_checkpoint needs a callable. Got {fn!r}.")
    _hooks.append(fn)
    return fn


def clear_checkpoint_hooks() -> None:
    """Forget every registered hook (tests, or a program that runs ``main`` twice)."""
    _hooks.clear()


def run_checkpoint_hooks() -> str | None:
    """Call every hook; the last checkpoint path one of them returned."""
    saved = None
    for hook in list(_hooks):
        result = hook()
        if result is not None:
            saved = str(Path(result).absolute())
    return saved


def in_job() -> bool:
    """True in a task of a job forgeml launched (its runner set ``FORGEML_JOB_STATE``)."""
    return bool(os.environ.get(_STATE_VAR))


def _update_state(**values: Any) -> None:
    path = os.environ.get(_STATE_VAR)
    if not path or not is_rank_zero():
        return
    from forgeml.jobs._records import update_json

    update_json(Path(path), **values)


def prepare_job() -> None:
    """Install the requeue and stop signal handlers, in a task of a forgeml job."""
    if not in_job():
        return
    if os.environ.get(_REQUEUE_VAR) == "1":
        signal.signal(signal.SIGUSR1, _on_requeue_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


def start_job_task(cfg: MutableMapping[str, Any]) -> None:
    """Inside the task's tracking run (if any): remember the run, so a restart resumes it,
    and set ``cfg.resume`` to the checkpoint to resume from (None on a first start).

    ``resume`` is set after the run logged the config: it changes from one start to the
    next, and a resumed run's params cannot change.
    """
    if not in_job():
        return
    resume = os.environ.get(_RESUME_VAR) or None
    if resume or "resume" not in cfg:
        cfg["resume"] = resume
    if resume:
        log.info("resuming from checkpoint %s", resume)
    if "forgeml.track._run" not in sys.modules:
        return  # no tracking in this process
    from forgeml.track import active_run

    run = active_run()
    if run is not None and run.enabled and run.run_id:
        _update_state(run_id=run.run_id)


def _save(reason: str) -> None:
    log.warning("%s: saving a checkpoint", reason)
    path = run_checkpoint_hooks()
    if path is not None:
        _update_state(checkpoint=path, checkpointed=time.time())
        log.warning("checkpoint saved to %s", path)


def _on_requeue_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _save("the job is near its time limit (SIGUSR1)")
    raise SystemExit(REQUEUE_EXIT)


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _save("the job was asked to stop (SIGTERM)")
    raise KeyboardInterrupt
