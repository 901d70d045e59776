"""Copy what a run prints (``sys.stdout``, ``sys.stderr``, console log handlers) to a file."""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path
from typing import IO, Any


class _TeeStream(io.TextIOBase):
    """Writes to the original stream and to the shared log file."""

    def __init__(self, stream: Any, sink: IO[str], lock: threading.Lock) -> None:
        super().__init__()
        self._stream = stream
        self._sink = sink
        self._lock = lock

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        with self._lock:
            if not self._sink.closed:
                self._sink.write(text)
        return written if isinstance(written, int) else len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()
        with self._lock:
            if not self._sink.closed:
                self._sink.flush()

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class OutputTee:
    """While started, everything written to ``sys.stdout``/``sys.stderr`` also goes to ``path``.

    Console log handlers made before the tee started hold the original streams;
    they are pointed at the tee too, and back when it stops. Output still reaches
    the terminal as before.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._sink: IO[str] | None = None
        self._streams: dict[str, tuple[Any, _TeeStream]] = {}
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def start(self) -> OutputTee:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = open(self.path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        for name in ("stdout", "stderr"):
            original = getattr(sys, name)
            if original is None:
                continue
            tee = _TeeStream(original, self._sink, self._lock)
            self._streams[name] = (original, tee)
            setattr(sys, name, tee)
        by_stream = {id(orig): tee for orig, tee in self._streams.values()}
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in by_stream:
                old = handler.setStream(by_stream[id(handler.stream)])
                self._handlers.append((handler, old))
        return self

    def stop(self) -> None:
        for handler, old in self._handlers:
            if handler.stream is not None and isinstance(handler.stream, _TeeStream):
                handler.setStream(old)
        self._handlers.clear()
        for name, (original, tee) in self._streams.items():
            if getattr(sys, name) is tee:  # someone else replaced it since: leave theirs
                setattr(sys, name, original)
        self._streams.clear()
        if self._sink is not None:
            with self._lock:
                self._sink.close()
            self._sink = None
