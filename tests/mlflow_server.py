"""A real MLflow tracking server for tests and benchmarks, on 127.0.0.1.

Usage::

    server = start_mlflow(tmp_dir)   # ~6 s; raises MlflowServerError if it cannot start
    server.uri                       # http://127.0.0.1:PORT
    ...
    server.stop()

The server keeps runs in ``tmp_dir/mlflow.db`` (SQLite) and serves artifacts
from ``tmp_dir/artifacts`` (``--artifacts-destination``: clients upload through
the server). MLflow's background job workers are turned off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): they would outlive the server.
The server runs in its own process group, which ``stop()`` ends, and gets
SIGTERM when the thread that started it exits (Linux ``PR_SET_PDEATHSIG``).

:class:`TcpProxy` forwards a port to the server and can be closed, which looks
to a client like the server going down mid-run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from forgeml._core._net import free_port
from s3server import _die_with_parent

__all__ = ["MlflowServer", "MlflowServerError", "TcpProxy", "free_port", "start_mlflow"]


class MlflowServerError(RuntimeError):
    """``mlflow server`` could not be found or did not answer ``/health`` in time."""


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``uri`` is its tracking URI."""

    uri: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group; SIGKILL it after ``timeout`` seconds."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers it left behind

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _mlflow_command() -> list[str]:
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]


def start_mlflow(tmpdir: str | os.PathLike[str], *, timeout: float = 60.0) -> MlflowServer:
    """Start ``mlflow server`` with its store under ``tmpdir`` and wait for ``/health``."""
    root = Path(tmpdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        *_mlflow_command(),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    log_path = root / "server.log"
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=root,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
    except OSError as exc:
        raise MlflowServerError(f"Cannot run {args[0]}: {exc}") from exc
    server = MlflowServer(
        uri=f"http://127.0.0.1:{port}", port=port, root=root, process=process, log_path=log_path
    )
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise MlflowServerError(
                f"'mlflow server' exited with code {code} before answering.\n{server.log()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise MlflowServerError(
        f"'mlflow server' did not answer {server.uri}/health within {timeout:g} s "
        f"(last error: {last}).\n{server.log()[-4000:]}"
    )


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_port``; ``close()`` drops every connection.

    To a client this looks like a tracking server that went away mid-run; a new
    proxy on the same ``port`` brings it back.
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.uri = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
