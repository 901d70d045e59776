"""PyTorch adapter: seeding, determinism and process groups."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class TorchAdapter:
    name = "torch"
    module = "torch"

    def seed(self, seed: int, deterministic: bool = False) -> None:
        torch.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def cuda_initialized(self) -> bool:
        return bool(torch.cuda.is_initialized())

    def device_count(self) -> int:
        return int(torch.cuda.device_count())

    def set_device(self, index: int) -> None:
        torch.cuda.set_device(index)

    def init_process_group(
        self, *, backend: str, init_method: str, rank: int, world_size: int
    ) -> None:
        dist.init_process_group(
            backend=backend, init_method=init_method, rank=rank, world_size=world_size
        )

    def destroy_process_group(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def spawn(self, fn: Callable[..., Any], args: tuple[Any, ...], nprocs: int) -> None:
        """Run ``fn(local_rank, *args)`` in ``nprocs`` processes; one failure stops them all.

        Raises :class:`WorkerFailed` with the failing worker's traceback.
        """
        try:
            mp.start_processes(fn, args=args, nprocs=nprocs, join=True, start_method="spawn")
        except mp.ProcessRaisedException as exc:
            raise WorkerFailed(exc.error_index, str(exc)) from None
        except mp.ProcessExitedException as exc:
            raise WorkerFailed(exc.error_index, str(exc), exit_code=exc.exit_code) from None


class WorkerFailed(Exception):
    def __init__(self, rank: int, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code


adapter = TorchAdapter()
