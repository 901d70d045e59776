"""What the benchmark scripts share: a registry of named figures, timing helpers,
the ``--runs``/``--only`` command line and the loop that prints one JSON line per figure.

Each script is run as ``python benchmarks/NAME.py``, which puts this folder on
``sys.path``, so ``from _bench import ...`` works.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

Record = dict[str, Any]
C = TypeVar("C")


class Benchmarks(Generic[C]):
    """Named benchmark functions ``fn(context) -> record``; ``@benchmarks("name")`` adds one."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[[C], Record]] = {}

    def __call__(self, name: str) -> Callable[[Callable[[C], Record]], Callable[[C], Record]]:
        def register(fn: Callable[[C], Record]) -> Callable[[C], Record]:
            self._functions[name] = fn
            return fn

        return register

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __getitem__(self, name: str) -> Callable[[C], Record]:
        return self._functions[name]

    def parser(self, doc: str | None, *, runs: int = 7) -> argparse.ArgumentParser:
        """A command line with ``--runs`` and ``--only NAME`` (repeatable); add your own."""
        parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
        parser.add_argument("--runs", type=int, default=runs, help="timed runs per figure")
        parser.add_argument(
            "--only",
            action="append",
            metavar="NAME",
            help=f"run only this benchmark (repeatable): {', '.join(self)}",
        )
        return parser

    def selected(
        self, parser: argparse.ArgumentParser, args: argparse.Namespace, *positive: str
    ) -> list[str]:
        """The benchmarks to run; ``--runs`` and the named options must be positive."""
        for option in ("runs", *positive):
            value = getattr(args, option)
            if value < 1:
                flag = "--" + option.replace("_", "-")
                parser.error(f"{flag} must be a positive integer. Got {value}.")
        names: list[str] = args.only or list(self)
        unknown = [name for name in names if name not in self._functions]
        if unknown:
            parser.error(f"unknown benchmark {unknown[0]!r}. Known: {', '.join(self)}.")
        return names

    def run(self, names: list[str], root: Path, context: Callable[[Path], C]) -> int:
        """Run each benchmark in its own folder under ``root``; print its record.

        A benchmark that raises prints ``{"name", "ratio": 0.0, "error"}``; the exit
        status is then 1.
        """
        failed = False
        for name in names:
            workdir = root / name
            workdir.mkdir()
            try:
                record = self[name](context(workdir))
            except Exception as exc:
                record = {"name": name, "ratio": 0.0, "error": f"{type(exc).__name__}: {exc}"}
                failed = True
            print(json.dumps(record), flush=True)
        return 1 if failed else 0


def ms(seconds: float, digits: int = 1) -> float:
    return round(seconds * 1000, digits)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
