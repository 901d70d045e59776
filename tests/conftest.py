"""Test-wide settings and shared fixtures."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/s3server.py is importable as s3server

from mlflow_server import MlflowServer, MlflowServerError, start_mlflow
from s3server import S3Server, S3ServerError, start_s3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS ``weed mini`` on 127.0.0.1), one per test session.

    Yields a :class:`s3server.S3Server`: ``.endpoint`` (``http://127.0.0.1:PORT``),
    ``.key``, ``.secret``, ``.env()`` (the env vars pointing at it), ``.client()``
    (a boto3 client) and ``.make_bucket(name=None)``. Changes no global state: use
    ``s3_env`` to point forgeml at it. Skips (with the reason) only when the
    ``weed`` binary is missing or cannot start; the server stops at session end.
    """
    try:
        server = start_s3(tmp_path_factory.mktemp("s3"))
    except S3ServerError as exc:
        pytest.skip(f"No S3 server for this test: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point S3 clients at ``s3_server`` for one test; returns a fresh, created bucket name.

    Sets ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``S3_ENDPOINT_URL``
    (monkeypatched, so undone after the test) and removes ``AWS_ENDPOINT_URL``,
    ``AWS_ENDPOINT_URL_S3``, ``AWS_SESSION_TOKEN`` and ``AWS_PROFILE``; settings made
    with ``forgeml.store.configure()`` during the test are dropped after it. The bucket
    (``test-<16 hex>``, unique per test) already exists: use ``f"s3://{s3_env}/..."``.
    """
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    from forgeml.store import _fs

    monkeypatch.setattr(_fs, "_config", {})
    return s3_server.make_bucket(f"test-{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server (``mlflow server`` on 127.0.0.1), one per test session.

    Yields a :class:`mlflow_server.MlflowServer`: ``.uri`` (``http://127.0.0.1:PORT``),
    ``.port`` and ``.root`` (its SQLite store and artifact folder). Changes no global
    state: pass ``.uri`` to forgeml or set ``MLFLOW_TRACKING_URI`` in a test. Skips
    (with the reason) only when the server cannot start; it stops at session end.
    """
    try:
        server = start_mlflow(tmp_path_factory.mktemp("mlflow-server"))
    except MlflowServerError as exc:
        pytest.skip(f"No MLflow server for this test: {exc}")
    try:
        yield server
    finally:
        server.stop()
