"""Daemon mode: detach with python-daemon, record the daemon, list and stop daemons."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from forgeml._core._env import run_dir
from forgeml._core._errors import AppError
from forgeml._core._files import atomic_write_text

log = logging.getLogger("forgeml.app")


@dataclass
class DaemonRecord:
    """What ``forgeml ps`` knows of a daemon started by ``app.run`` with ``-d``."""

    pid: int
    name: str
    argv: list[str]
    cwd: str
    logfile: str
    pidfile: str
    started: float
    create_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def record_file(self) -> Path:
        return Path(self.pidfile).with_suffix(".json")

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def daemonize(name: str, logfile: Path | None) -> DaemonRecord:
    """Detach from the terminal; the calling process exits, the daemon returns.

    The working directory is kept. stdout and stderr go to the log file; a pid
    file and a record for ``forgeml ps`` are written, and removed at exit.
    """
    import daemon

    directory = run_dir()
    directory.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    print(
        f"forgeml: starting '{name}' as a daemon in {cwd}; "
        f"`forgeml ps` lists it and `forgeml stop {name}` stops it.",
        file=sys.stderr,
        flush=True,
    )
    context = daemon.DaemonContext(
        working_directory=cwd,
        umask=_current_umask(),
        detach_process=True,
        signal_map={signal.SIGTERM: _terminate, signal.SIGHUP: _terminate},
    )
    context.open()
    pid = os.getpid()
    path = Path(logfile) if logfile else Path(cwd) / f"{name}-{pid}.log"
    path = path if path.is_absolute() else Path(cwd) / path
    stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the daemon
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    pidfile = directory / f"{name}-{pid}.pid"
    record = DaemonRecord(
        pid=pid,
        name=name,
        argv=list(sys.argv),
        cwd=cwd,
        logfile=str(path),
        pidfile=str(pidfile),
        started=time.time(),
        create_time=psutil.Process(pid).create_time(),
    )
    atomic_write_text(pidfile, f"{pid}\n")
    atomic_write_text(record.record_file, json.dumps(asdict(record), indent=2))
    atexit.register(_remove_record, record)
    return record


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_record(record: DaemonRecord) -> None:
    if os.getpid() == record.pid:
        _remove_record_files(record)


def list_daemons(*, prune: bool = True) -> list[DaemonRecord]:
    """Daemons started by ``app.run -d`` that are still running; stale records are removed."""
    directory = run_dir()
    records: list[DaemonRecord] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = DaemonRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if record.alive():
            records.append(record)
        elif prune:
            for stale in (path, Path(record.pidfile)):
                with contextlib.suppress(OSError):
                    stale.unlink()
    return sorted(records, key=lambda r: r.started)


def find_daemons(target: str) -> list[DaemonRecord]:
    """Daemons whose pid or program name is ``target``."""
    running = list_daemons()
    if target.isdigit():
        return [r for r in running if r.pid == int(target)]
    return [r for r in running if r.name == target]


def stop_daemon(record: DaemonRecord, *, timeout: float = 10.0, force: bool = False) -> bool:
    """SIGTERM the daemon and wait up to ``timeout`` s; with ``force``, SIGKILL it after that.

    Returns True when it has stopped.
    """
    if not record.alive():
        _remove_record_files(record)
        return True
    try:
        proc = psutil.Process(record.pid)
        proc.terminate()
        if not _wait_stopped(record, timeout):
            if not force:
                return False
            proc.kill()
            _wait_stopped(record, 5.0)
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied as exc:
        raise AppError(
            f"Not allowed to stop daemon {record.pid} ('{record.name}'): {exc}. "
            f"Run as the user that started it."
        ) from exc
    _remove_record_files(record)
    return True


def _wait_stopped(record: DaemonRecord, timeout: float) -> bool:
    """Wait until the daemon has exited; a zombie counts as exited.

    A daemon is not our child, so we cannot reap it: ``psutil.Process.wait``
    would wait for whoever reaps it, and forever where nobody does (a container
    without an init process).
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while record.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def _remove_record_files(record: DaemonRecord) -> None:
    for path in (Path(record.pidfile), record.record_file):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
