"""Local distributed runs: N torch workers with a process group each."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from forgeml._core._env import nvidia_gpu_count
from forgeml._core._errors import AppError
from forgeml._core._net import free_port
from forgeml.config import Config

log = logging.getLogger("forgeml.app")

_WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_externally() -> bool:
    """True inside a worker started by torchrun or a scheduler (the env names the rank)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE"))


def resolve_world_size(cfg: Config) -> int:
    world_size = int(cfg.get("world_size", -1))
    if world_size > 0:
        return world_size
    gpus = nvidia_gpu_count()
    if gpus == 0:
        raise AppError(
            "--dist torch needs --world-size N on a machine without GPUs "
            f"(got --world-size {world_size}). Example: --dist torch --world-size 2."
        )
    return gpus


#: ``--dist-port``'s port when none is given (``None``); under Slurm one derived from the job
#: id is used instead (:func:`forgeml.jobs.slurm_worker_env`).
DEFAULT_DIST_PORT = 25900


def master_port(cfg: Config, host: str = "127.0.0.1") -> int:
    """``--dist-port`` (None: 25900), checked to be free; 0 picks a free port."""
    given = cfg.get("dist_port")
    port = DEFAULT_DIST_PORT if given is None else int(given)
    if port == 0:
        return free_port(host)
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise AppError(
                f"--dist-port {port} is in use (another distributed run?). "
                f"Pass another port, or --dist-port 0 to pick a free one."
            ) from None
    return port


def launch(call: Callable[[Config], Any], cfg: Config) -> None:
    """Start ``world_size`` workers on this machine and wait for them all.

    A failure in one worker stops the others; the launcher then raises
    :class:`AppError` carrying the worker's traceback.
    """
    if launched_externally():
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        _worker_main(local_rank, call, cfg, int(os.environ["WORLD_SIZE"]), None, rank)
        return
    world_size = resolve_world_size(cfg)  # before importing torch: a bad call fails fast
    port = master_port(cfg)
    from forgeml.frameworks import get_adapter
    from forgeml.frameworks.torch import WorkerFailed

    torch_adapter = get_adapter("torch")
    log.info("starting %d workers (backend %s, port %d)", world_size, cfg.dist_backend, port)
    try:
        torch_adapter.spawn(  # type: ignore[attr-defined]
            _worker_main, args=(call, cfg, world_size, port, None), nprocs=world_size
        )
    except WorkerFailed as exc:
        raise AppError(
            f"Distributed worker {exc.rank} of {world_size} failed; the others were stopped.\n{exc}"
        ) from None


def _worker_main(
    local_rank: int,
    call: Callable[[Config], Any],
    cfg: Config,
    world_size: int,
    port: int | None,
    rank: int | None,
) -> None:
    from forgeml.app._run import prepare_process
    from forgeml.frameworks import get_adapter

    torch_adapter: Any = get_adapter("torch")
    rank = local_rank if rank is None else rank
    if port is not None:
        os.environ.update(
            MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            MASTER_PORT=str(port),
            RANK=str(rank),
            LOCAL_RANK=str(local_rank),
            WORLD_SIZE=str(world_size),
        )
    cfg = cfg.copy()
    cfg.rank = rank
    cfg.local_rank = local_rank
    cfg.world_size = world_size
    prepare_process(cfg, rank=rank)
    if cfg.get("dist_backend") == "nccl" or (
        torch_adapter.device_count() > 0 and not cfg.get("no_gpu")
    ):
        torch_adapter.set_device(local_rank % max(torch_adapter.device_count(), 1))
    torch_adapter.init_process_group(
        backend=cfg.dist_backend, init_method=cfg.dist_url, rank=rank, world_size=world_size
    )
    try:
        call(cfg)
    except BaseException:
        log.exception("worker %d of %d failed", rank, world_size)
        raise
    finally:
        torch_adapter.destroy_process_group()
