"""The launcher: ``app.run(main, cfg)`` seeds, pins GPUs, logs, daemonizes and distributes."""

from forgeml._core._errors import AppError
from forgeml.app._checkpoint import checkpoint_requested, clear_checkpoint_hooks, on_checkpoint
from forgeml.app._daemon import DaemonRecord, find_daemons, list_daemons, stop_daemon
from forgeml.app._logging import setup_logging
from forgeml.app._run import apply_gpu_visibility, run, run_defaults
from forgeml.app._seed import seed_everything

__all__ = [
    "AppError",
    "DaemonRecord",
    "apply_gpu_visibility",
    "checkpoint_requested",
    "clear_checkpoint_hooks",
    "find_daemons",
    "list_daemons",
    "on_checkpoint",
    "run",
    "run_defaults",
    "seed_everything",
    "setup_logging",
    "stop_daemon",
]
