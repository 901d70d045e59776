"""A real single-node Slurm cluster for the tests: ``scripts/slurm-local`` in a temp dir.

Import the fixtures into a test module (``from slurm_cluster import slurm_cluster``); the
cluster starts once per session and stops at its end. Tests skip, saying why, when the
Slurm and munge binaries are missing or the tests do not run as root (CI installs them with
``make slurm``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local"


def missing_reason() -> str | None:
    """Why the local cluster cannot start here, or None."""
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"Slurm is not installed ({tool} missing): run 'make slurm' (slurm-wlm, munge)"
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (slurmd runs jobs as their users)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Start the cluster; its ``slurm.conf`` (``SLURM_CONF`` is set for the whole session)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="forgeml-slurm-test-"))
    state.chmod(0o755)  # munged (user munge) must reach its socket inside
    env = {**os.environ, "FORGEML_SLURM_DIR": str(state)}
    started = subprocess.run(
        [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if started.returncode != 0:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, check=False)
        pytest.fail(f"scripts/slurm-local start failed:\n{started.stdout}\n{started.stderr}")
    conf = state / "etc" / "slurm.conf"
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    from forgeml.jobs._slurm import clear_config_cache

    clear_config_cache()
    try:
        yield conf
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, check=False, timeout=60)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        clear_config_cache()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def jobs_home(slurm_cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A forgeml home (job records, tracking store) for one test, on the running cluster.

    It lives under a world-readable temp dir (jobs run as root here, but keep it simple).
    """
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_JOBS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def until(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``check`` every 0.2 s until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
