"""What a run records about where it ran: git state, Python and packages, host, Slurm job."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from forgeml._core._git import GitInfo


def packages() -> dict[str, str]:
    """Installed distributions as ``{name: version}``, sorted (``pip freeze`` without pip)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.name
        if name and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def requirements(pkgs: dict[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in pkgs.items())


def slurm_job() -> str | None:
    """The Slurm job id (``JOB_TASK`` for array tasks), or None outside Slurm."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def environment(pkgs: dict[str, str] | None = None) -> dict[str, Any]:
    """The Python, platform and host a run ran on, with its installed packages."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "cwd": str(Path.cwd()),
        "argv": list(sys.argv),
        "cpu_count": os.cpu_count(),
        "slurm_job_id": slurm_job(),
        "packages": packages() if pkgs is None else pkgs,
    }


def system_tags(source: str | None, git: GitInfo | None, env: dict[str, Any]) -> dict[str, str]:
    """Run tags: MLflow's standard ``mlflow.*`` ones (shown by its UI) and ``forgeml.*``."""
    tags = {
        "mlflow.user": str(env["user"]),
        "mlflow.source.type": "LOCAL",
        "forgeml.host": str(env["host"]),
        "forgeml.python": str(env["python"]),
        "forgeml.platform": str(env["platform"]),
        "forgeml.pid": str(env["pid"]),
    }
    if source:
        tags["mlflow.source.name"] = source
    if git is not None:
        tags["mlflow.source.git.commit"] = git.commit
        tags["forgeml.git.dirty"] = str(git.dirty).lower()
        if git.branch:
            tags["mlflow.source.git.branch"] = git.branch
    if env.get("slurm_job_id"):
        tags["forgeml.slurm.job_id"] = str(env["slurm_job_id"])
    return tags
