"""Checkpoint hooks and the signals of a forgeml job: requeue before the time limit, stop.

Inside a task of a job launched by ``forgeml jobs`` (or ``--dist slurm``), ``app.run``:

- sets ``cfg.resume`` to the checkpoint a requeued or relaunched task resumes from (None
  on a first start) and records the task's tracking run, so a restart continues it;
- on SIGUSR1 (Slurm's warning before the time limit, with ``--requeue``) or SIGTERM
  (``forgeml jobs stop``) only takes note: a signal handler runs between any two bytecodes,
  where a model may be half updated. The training loop calls :func:`checkpoint_requested`
  at its step boundaries; at the first call after the signal the hooks registered with
  :func:`on_checkpoint` run there, the checkpoint they return is recorded, and the program
  ends: exit status 75 after SIGUSR1 (the task runner requeues the job), as if interrupted
  after SIGTERM.
- Fallback for programs that never call :func:`checkpoint_requested`: after a grace period
  (half the signal's budget, ``--signal-seconds``, for a requeue; :data:`STOP_GRACE_SECONDS`
  for a stop) the hooks run from a SIGALRM handler, wherever the program is, as they would
  without polling. A checkpoint saved that way may catch a step half done.
"""

from __future__ import annotations

import contextlib
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

#: Seconds a stop request (SIGTERM) waits for :func:`checkpoint_requested` before the hooks
#: run from the fallback.
STOP_GRACE_SECONDS = 5.0
#: The requeue signal's budget when the task runner did not say (``jobs.SIGNAL_SECONDS``).
_DEFAULT_SIGNAL_SECONDS = 120

_hooks: list[Callable[[], Any]] = []
_request: dict[str, Any] = {}  # the pending signal: {"signum", "reason", "at"}


def on_checkpoint(fn: F) -> F:
    """Register ``fn()`` to save a checkpoint when the job must stop (requeue or stop).

    ``fn`` returns the path it saved (the next start of the task gets it as
    ``cfg.resume``), or None. Hooks run in the order registered; the last path wins.
    They run at the next :func:`checkpoint_requested` call after the signal (or, if the
    program never calls it, from the fallback after a grace period). Usable as a decorator;
    returns ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"app.on_checkpoint needs a callable. Got {fn!r}.")
    _hooks.append(fn)
    return fn


def clear_checkpoint_hooks() -> None:
    """Forget every registered hook and any pending request (tests, or ``main`` run twice)."""
    _hooks.clear()
    _cancel_fallback()
    _request.clear()


def run_checkpoint_hooks() -> str | None:
    """Call every hook; the last checkpoint path one of them returned."""
    saved = None
    for hook in list(_hooks):
        result = hook()
        if result is not None:
            saved = str(Path(result).absolute())
    return saved


def checkpoint_requested() -> bool:
    """Poll at a step boundary: False while the job runs on; after the requeue or stop
    signal, save the checkpoint here and end the program.

    The first call after SIGUSR1 (near the time limit, with ``--requeue``) or SIGTERM
    (``forgeml jobs stop``) runs the :func:`on_checkpoint` hooks at this safe point,
    records the checkpoint for the restart, and raises ``SystemExit(75)`` (the task runner
    requeues the job) or ``KeyboardInterrupt`` (a stop). Cheap: one dict lookup when no
    signal came. Outside a forgeml job it always returns False.
    """
    if not _request or _request.get("handled"):
        return False
    _finish(from_fallback=False)
    return True  # pragma: no cover - _finish raises


def in_job() -> bool:
    """True in a task of a job forgeml launched (its runner set ``FORGEML_JOB_STATE``)."""
    from forgeml.jobs._records import STATE_VAR

    return bool(os.environ.get(STATE_VAR))


def _update_state(**values: Any) -> None:
    from forgeml.jobs._records import STATE_VAR, update_json

    path = os.environ.get(STATE_VAR)
    if not path or not is_rank_zero():
        return
    update_json(Path(path), **values)


def prepare_job() -> None:
    """Install the requeue and stop signal handlers, in a task of a forgeml job."""
    if not in_job():
        return
    from forgeml.jobs._records import REQUEUE_VAR

    _request.clear()
    if os.environ.get(REQUEUE_VAR) == "1":
        signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def start_job_task(cfg: MutableMapping[str, Any]) -> None:
    """Inside the task's tracking run (if any): remember the run, so a restart resumes it,
    and set ``cfg.resume`` to the checkpoint to resume from (None on a first start).

    ``resume`` is set after the run logged the config: it changes from one start to the
    next, and a resumed run's params cannot change.
    """
    if not in_job():
        return
    from forgeml.jobs._records import RESUME_VAR

    resume = os.environ.get(RESUME_VAR) or None
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


def _grace_seconds(signum: int) -> float:
    """How long a request waits for :func:`checkpoint_requested` before the fallback."""
    if signum != signal.SIGUSR1:
        return STOP_GRACE_SECONDS
    from forgeml.jobs._records import SIGNAL_SECONDS_VAR

    try:
        budget = float(os.environ.get(SIGNAL_SECONDS_VAR) or _DEFAULT_SIGNAL_SECONDS)
    except ValueError:
        budget = _DEFAULT_SIGNAL_SECONDS
    return max(budget / 2, 0.5)  # the other half is left for the hooks themselves


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Only take note (any bytecode may be half done here) and arm the fallback."""
    if _request:
        return  # one request at a time; the first one decides
    requeue = signum == signal.SIGUSR1
    _request.update(
        signum=signum,
        at=time.monotonic(),
        reason=(
            "the job is near its time limit (SIGUSR1)"
            if requeue
            else "the job was asked to stop (SIGTERM)"
        ),
    )
    grace = _grace_seconds(signum)
    with contextlib.suppress(ValueError, OSError):  # not the main thread: no fallback
        signal.signal(signal.SIGALRM, _on_fallback)
        signal.setitimer(signal.ITIMER_REAL, grace)


def _on_fallback(signum: int, frame: FrameType | None) -> None:
    if _request and not _request.get("handled"):
        log.warning(
            "checkpoint_requested() was not called within %.1f s of the signal: saving the "
            "checkpoint now, wherever the program is",
            time.monotonic() - float(_request["at"]),
        )
        _finish(from_fallback=True)


def _cancel_fallback() -> None:
    with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing armed
        signal.setitimer(signal.ITIMER_REAL, 0)


def _finish(*, from_fallback: bool) -> None:
    """Save the checkpoint once, then end the program as the signal asked."""
    _request["handled"] = True
    if not from_fallback:
        _cancel_fallback()
    log.warning("%s: saving a checkpoint", _request["reason"])
    path = run_checkpoint_hooks()
    if path is not None:
        _update_state(checkpoint=path, checkpointed=time.time())
        log.warning("checkpoint saved to %s", path)
    if _request["signum"] == signal.SIGUSR1:
        from forgeml.jobs._records import REQUEUE_EXIT

        raise SystemExit(REQUEUE_EXIT)
    raise KeyboardInterrupt
