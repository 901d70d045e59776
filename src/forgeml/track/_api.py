"""Module-level logging functions: they act on the active run (see ``track.active_run()``).

With no active run they record nothing and warn once; in distributed workers of
rank > 0 (a disabled run) they do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from forgeml.track._run import current, exit_status


def log_params(params: Mapping[str, Any]) -> None:
    """Log params into the active run; see :meth:`Run.log_params` (they are immutable)."""
    if (run := current("log_params")) is not None:
        run.log_params(params)


def log_param(key: str, value: Any) -> None:
    if (run := current("log_param")) is not None:
        run.log_params({key: value})


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Queue metric values for the active run; they are written in batches, not one by one."""
    if (run := current("log_metrics")) is not None:
        run.log_metrics(metrics, step=step)


def log_metric(key: str, value: Any, step: int | None = None) -> None:
    if (run := current("log_metric")) is not None:
        run.log_metrics({key: value}, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    if (run := current("set_tags")) is not None:
        run.set_tags(tags)


def log_artifact(path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a file or folder into the active run's artifacts."""
    if (run := current("log_artifact")) is not None:
        run.log_artifact(path, artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    if (run := current("log_text")) is not None:
        run.log_text(text, artifact_file)


def log_dict(data: Any, artifact_file: str) -> None:
    if (run := current("log_dict")) is not None:
        run.log_dict(data, artifact_file)


def flush() -> None:
    """Write the active run's queued metrics now."""
    if (run := current("flush")) is not None:
        run.flush()


def end_run(status: str = "FINISHED", error: BaseException | None = None) -> None:
    """End the active run (what leaving ``with track.start_run():`` does)."""
    if (run := current("end_run")) is not None:
        run.end(status if error is None else exit_status(error), error=error)
