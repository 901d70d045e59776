"""Progress of byte transfers: a rich bar on stderr, a callback, or nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: Transfers at least this big get a bar (with ``progress=None``) when stderr is a terminal.
PROGRESS_MIN_BYTES = 8 << 20

#: ``progress=``: None (a bar for big transfers on a terminal), a bool, or ``fn(done, total)``.
ProgressArg = bool | Callable[[int, int | None], None] | None


class TransferProgress:
    """Reports bytes moved: ``start(total)``, then ``advance(n)``; a context manager.

    Bars show only for transfers of at least :data:`PROGRESS_MIN_BYTES` (or of an
    unknown size): with ``progress=True`` always, with ``None`` when stderr is a
    terminal, with ``False`` never; a callable receives ``(done, total)`` instead.
    """

    def __init__(self, progress: ProgressArg, label: str, *, transient: bool = True) -> None:
        self._spec = progress
        self._label = label
        self._transient = transient
        self._done = 0
        self._total: int | None = None
        self._bar: Any = None
        self._task: Any = None

    def start(self, total: int | None) -> None:
        self._total = total
        spec = self._spec
        if callable(spec) or spec is False or self._bar is not None:
            return
        big = total is None or total >= PROGRESS_MIN_BYTES
        if not big or (spec is None and not sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=self._transient,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._label, total=total)

    def advance(self, n: int) -> None:
        self._done += n
        if callable(self._spec):
            self._spec(self._done, self._total)
        elif self._bar is not None:
            self._bar.update(self._task, advance=n)

    def __enter__(self) -> TransferProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
