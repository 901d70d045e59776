"""``ArgumentParser``: argparse whose ``parse_args`` returns a merged ``Config``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from forgeml._core._env import nvidia_gpu_count
from forgeml._core._errors import ConfigError
from forgeml.config import Config, apply_overrides, is_override, load

DIST_BACKENDS = ("torch", "slurm")

_UNSET: Any = argparse.SUPPRESS


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add forgeml's built-in run options (config, launcher, distributed, Slurm)."""
    g = parser.add_argument_group("config")
    g.add_argument(
        "--cfg",
        nargs="+",
        metavar="FILE|KEY=VALUE",
        default=None,
        help="config files (merged in order) and dotted overrides such as log.priority=2",
    )
    g = parser.add_argument_group("run")
    g.add_argument("-d", "--daemon", action="store_true", help="detach and run as a daemon")
    g.add_argument("-L", "--logging", action="store_true", help="log to a file and the console")
    g.add_argument(
        "--logfile", default=None, help="log file; None means <script>-<pid>.log with -L"
    )
    g.add_argument(
        "-s",
        "--seed",
        type=int,
        default=1204,
        help="random seed for random, numpy, torch and tensorflow",
    )
    g.add_argument(
        "--deterministic", action="store_true", help="turn on the frameworks' deterministic modes"
    )
    gpus = g.add_mutually_exclusive_group()
    gpus.add_argument(
        "--gpu", type=int, nargs="*", default=[], metavar="N", help="GPU indices to make visible"
    )
    gpus.add_argument("--no-gpu", action="store_true", help="hide every GPU")
    g = parser.add_argument_group("distributed")
    g.add_argument("--dist", choices=DIST_BACKENDS, default=None, help="launch distributed workers")
    g.add_argument(
        "--dist-backend",
        default=None,
        help="torch.distributed backend; None means nccl with a GPU, gloo on CPU",
    )
    g.add_argument("--dist-url", default="env://", help="process-group init URL")
    g.add_argument("--dist-port", type=int, default=25900, help="master port; 0 picks a free one")
    g.add_argument("--dist-no-sync-bn", action="store_true", help="do not convert to SyncBatchNorm")
    g.add_argument(
        "--world-size", type=int, default=-1, help="worker count; -1 means the visible GPU count"
    )
    g.add_argument("--rank", type=int, default=-1, help="global rank of this process")
    g = parser.add_argument_group("slurm")
    g.add_argument("--slurm-partition", default="gpu", help="partition")
    g.add_argument("--slurm-nodelist", default=None, help="nodes to run on")
    g.add_argument("--slurm-nodes", type=int, default=1, help="node count")
    g.add_argument("--slurm-ntasks-per-node", type=int, default=1, help="tasks per node")
    g.add_argument("--slurm-cpus-per-task", type=int, default=4, help="CPUs per task")
    g.add_argument("--slurm-constraint", default=None, help="node features required")
    g.add_argument("--slurm-mem", default="32G", help="memory per node")
    g.add_argument("--slurm-time", default="0", help="time limit; '0' means none")
    g.add_argument("--slurm-export", default="", help="environment variables to export")


def default_dist_backend(no_gpu: bool = False) -> str:
    return "nccl" if not no_gpu and nvidia_gpu_count() > 0 else "gloo"


def scalar_converter(scalar: Callable[[str], Any]) -> Callable[[Any], Any]:
    """Convert a config value with an option's ``type``; numbers are checked strictly."""
    name = getattr(scalar, "__name__", repr(scalar))

    def convert(value: Any) -> Any:
        if scalar in (int, float):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"invalid {name} value: {value!r}")
            if scalar is int and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"invalid {name} value: {value!r}")
                return int(value)
        elif isinstance(scalar, type) and isinstance(value, scalar):
            return value
        try:
            return scalar(value)
        except (TypeError, ValueError):
            raise ValueError(f"invalid {name} value: {value!r}") from None

    return convert


def _type_converter(action: argparse.Action) -> Callable[[Any], Any] | None:
    """The check for config values of a numeric option (``--seed``, ``--gpu N...``), or None."""
    if action.type not in (int, float):
        return None
    item = scalar_converter(action.type)
    if action.nargs is None:
        return item
    if action.nargs not in ("*", "+"):
        return None

    def items(value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]  # gpu: "0,2"
        elif not isinstance(value, list | tuple):
            value = [value]
        return [item(v) for v in value]

    return items


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose ``parse_args()`` returns a :class:`Config`.

    Built-in run options are added first; the application adds its own.
    Precedence: built-in defaults < config files (``--cfg``) < options given on
    the command line < ``key=value`` overrides.
    """

    def __init__(self, *args: Any, run_options: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self._converters: dict[str, Callable[[Any], Any]] = {}
        if run_options:
            add_run_options(self)

    def set_converter(self, dest: str, convert: Callable[[Any], Any]) -> None:
        """Check and convert ``dest`` values that came from config files or overrides."""
        self._converters[dest] = convert

    def defaults(self) -> Config:
        """Every option's default, as a ``Config`` (no command line is read)."""
        cfg = self._finish(self._parse_ns([]), explicit=set(), files=[], overrides=[])
        return cfg

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> Config:
        argv = list(sys.argv[1:] if args is None else args)
        ns = self._parse_ns(argv, namespace)
        explicit = self._explicit_dests(argv)
        items = [str(item) for item in (getattr(ns, "cfg", None) or [])]
        files = [i for i in items if os.path.exists(i) or not is_override(i)]
        overrides = [i for i in items if i not in files]
        return self._finish(ns, explicit=explicit, files=files, overrides=overrides)

    def _parse_ns(
        self, argv: Sequence[str], namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        return super().parse_args(argv, namespace)

    def _explicit_dests(self, argv: Sequence[str]) -> set[str]:
        """The options given on the command line (parsed again with every default unset)."""
        saved = [(action, action.default) for action in self._actions]
        saved_defaults = self._defaults
        try:
            for action, _ in saved:
                action.default = _UNSET
            self._defaults = {}
            ns, _ = super().parse_known_args(list(argv), argparse.Namespace())
        finally:
            for action, default in saved:
                action.default = default
            self._defaults = saved_defaults
        return set(vars(ns))

    def _finish(
        self,
        ns: argparse.Namespace,
        *,
        explicit: set[str],
        files: list[str],
        overrides: list[str],
    ) -> Config:
        values = vars(ns)
        cfg = Config({k: v for k, v in values.items() if k not in explicit})
        from_files: set[str] = set()
        try:
            for path in files:
                loaded = load(path)
                from_files.update(loaded)
                cfg.merge(loaded)
            cfg.merge({k: v for k, v in values.items() if k in explicit})
            apply_overrides(cfg, overrides)
        except ConfigError as exc:
            self.error(str(exc))
        if "cfg" in values:
            cfg["cfg"] = files or None
        # Values that came from config files or overrides are checked like typed options.
        overridden = {item.partition("=")[0].split(".")[0].strip() for item in overrides}
        from_config = (from_files - explicit) | overridden
        converters = {a.dest: c for a in self._actions if (c := _type_converter(a)) is not None}
        converters.update(self._converters)
        for dest, convert in converters.items():
            if dest in cfg and dest in from_config:
                try:
                    cfg[dest] = convert(cfg[dest])
                except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                    self.error(f"argument --{dest.replace('_', '-')}: {exc} (from --cfg)")
        if "dist_backend" in cfg and cfg.get("dist_backend") is None:
            cfg["dist_backend"] = default_dist_backend(bool(cfg.get("no_gpu")))
        order = [a.dest for a in self._actions if a.dest in cfg]
        return Config({k: cfg[k] for k in [*order, *(k for k in cfg if k not in order)]})

    def error(self, message: str) -> NoReturn:
        super().error(message)
