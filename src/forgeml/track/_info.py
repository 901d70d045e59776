"""What a run records about where it ran: git state, Python and packages, host, Slurm job."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: Largest dirty diff stored with a run; a bigger one is cut with a note.
MAX_DIFF_BYTES = 5 << 20
_GIT_TIMEOUT = 15.0


@dataclass(frozen=True)
class GitInfo:
    """The git state of the folder a run's code came from."""

    root: str
    commit: str
    branch: str
    dirty: bool
    status: str
    diff: str


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace")


def git_info(path: str | os.PathLike[str] | None = None) -> GitInfo | None:
    """Commit, branch and uncommitted changes of the repository holding ``path``.

    None when git is missing or ``path`` is not inside a repository (or one without
    commits). ``diff`` is ``git diff HEAD`` (staged and unstaged changes to tracked
    files); ``status`` (``git status --porcelain``) also lists untracked files.
    """
    where = Path(path or Path.cwd())
    if where.is_file():
        where = where.parent
    if not where.is_dir():
        return None
    root = _git(where, "rev-parse", "--show-toplevel")
    commit = _git(where, "rev-parse", "HEAD")
    if root is None or commit is None:
        return None
    branch = (_git(where, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    status = _git(where, "status", "--porcelain") or ""
    diff = _git(where, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    if len(diff.encode()) > MAX_DIFF_BYTES:
        diff = diff.encode()[:MAX_DIFF_BYTES].decode("utf-8", errors="ignore")
        diff += f"\n# forgeml: diff cut at {MAX_DIFF_BYTES} bytes\n"
    return GitInfo(
        root=root.strip(),
        commit=commit.strip(),
        branch=branch if branch and branch != "HEAD" else "",
        dirty=bool(status.strip()),
        status=status,
        diff=diff,
    )


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
