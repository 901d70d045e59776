"""``app.run(main, cfg)``: the launcher."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from forgeml._core._errors import AppError, JobsError, TrackError
from forgeml.app._checkpoint import in_job, prepare_job, start_job_task
from forgeml.app._logging import script_name, setup_logging
from forgeml.app._seed import seed_everything
from forgeml.config import Config

log = logging.getLogger("forgeml.app")


def run_defaults() -> Config:
    """The built-in run options with their defaults."""
    from forgeml.argparse import ArgumentParser

    return ArgumentParser(add_help=False).defaults()


def apply_gpu_visibility(cfg: Mapping[str, Any]) -> None:
    """Set ``CUDA_VISIBLE_DEVICES`` from ``--gpu``/``--no-gpu`` before any framework starts CUDA."""
    if cfg.get("no_gpu"):
        visible: str | None = ""
    elif cfg.get("gpu"):
        visible = ",".join(str(int(g)) for g in cfg["gpu"])
    else:
        visible = None
    if visible is None:
        return
    if "torch" in sys.modules:
        from forgeml.frameworks import get_adapter

        if get_adapter("torch").cuda_initialized():  # type: ignore[attr-defined]
            log.warning(
                "CUDA was initialised before app.run; CUDA_VISIBLE_DEVICES=%r may not take "
                "effect. Call app.run before touching torch.cuda.",
                visible,
            )
    os.environ["CUDA_VISIBLE_DEVICES"] = visible


def prepare_process(cfg: Config, rank: int | None = None) -> None:
    """Logging (secrets masked) and seeding for one process of a run."""
    logfile = setup_logging(cfg, rank, console=not cfg.get("daemon"))
    if logfile is not None:
        log.info("logging to %s", logfile)
    seed_everything(int(cfg.get("seed", 1204)), bool(cfg.get("deterministic")))


def run(
    main: Callable[..., Any], cfg: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any
) -> Any:
    """Run ``main(cfg, *args, **kwargs)`` with seeding, GPU pinning, logging, daemon and dist.

    Without ``cfg``, the command line is parsed with options built from
    ``main``'s signature (see :func:`forgeml.argparse.parser_for`), and ``main``
    is called with those values as keyword arguments.

    An exception in ``main`` is logged with its traceback and ends the process
    with exit code 1 (``SystemExit``); the return value of ``main`` is returned.
    """
    call: Callable[[Config], Any]
    if cfg is None:
        from forgeml.argparse import parser_for

        cfg = parser_for(main).parse_args()
        call = functools.partial(_call_with_params, main, args, kwargs)
    else:
        call = functools.partial(_call_main, main, args, kwargs)
    merged = run_defaults().merge(cfg)
    dist = merged.get("dist")
    try:
        if dist not in (None, "torch", "slurm"):
            raise AppError(f"--dist must be 'torch' or 'slurm'. Got {dist!r}.")
        if dist == "slurm" and not _slurm_task():
            return _submit_to_slurm(merged)
        if dist == "slurm":
            _slurm_worker_env(merged)
        prepare_job()
        apply_gpu_visibility(merged)
        if in_job():
            call = functools.partial(_job_task, call)
        if merged.get("tracking") not in (None, False):
            call = _tracked(call, main, merged)
        if merged.get("daemon"):
            from forgeml.app._daemon import daemonize

            record = daemonize(script_name(), merged.get("logfile"))
            merged["logfile"] = record.logfile
        if dist in ("torch", "slurm"):
            from forgeml.app._dist import launch

            setup_logging(merged, console=not merged.get("daemon"))
            return launch(call, merged)
        prepare_process(merged)
        return call(merged)
    except AppError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from exc
    except KeyboardInterrupt:
        log.error("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:
        log.exception("%s failed: %s", getattr(main, "__qualname__", main), exc)
        raise SystemExit(1) from exc


def _slurm_task() -> bool:
    """True inside a task of a ``--dist slurm`` job (else this run submits one)."""
    from forgeml.jobs._runtime import in_allocation

    return in_allocation()


def _submit_to_slurm(cfg: Config) -> Any:
    """Submit this command line as a Slurm job (``--dist slurm`` outside an allocation)."""
    from forgeml.jobs._runtime import submit_app

    try:
        job = submit_app(cfg)
    except JobsError as exc:
        raise AppError(str(exc)) from exc
    print(f"Submitted Slurm job {job.id} (forgeml jobs status {job.id}; log: {job.log()})")
    return job


def _slurm_worker_env(cfg: Config) -> None:
    from forgeml.jobs._runtime import slurm_worker_env

    try:
        slurm_worker_env(cfg)
    except JobsError as exc:
        raise AppError(str(exc)) from exc


def _job_task(call: Callable[[Config], Any], cfg: Config) -> Any:
    """``call(cfg)`` in a task of a forgeml job: its tracking run is recorded for restarts
    and ``cfg.resume`` names the checkpoint to resume from."""
    start_job_task(cfg)
    return call(cfg)


def _tracked(
    call: Callable[[Config], Any], main: Callable[..., Any], cfg: Config
) -> Callable[[Config], Any]:
    """``call`` run inside a tracked run (``forgeml.track``) when ``cfg.tracking`` asks for one."""
    from forgeml.track import tracking_enabled
    from forgeml.track._experiment import run_tracked, source_file

    try:
        if not tracking_enabled(cfg):
            return call
    except TrackError as exc:
        raise AppError(str(exc)) from exc
    name = getattr(main, "__name__", None) or "main"
    return functools.partial(run_tracked, call, name, source_file(main))


def _call_main(
    main: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], cfg: Config
) -> Any:
    return main(cfg, *args, **kwargs)


def _call_with_params(
    main: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], cfg: Config
) -> Any:
    from forgeml.argparse import call_with_config

    return call_with_config(main, cfg, *args, **kwargs)
