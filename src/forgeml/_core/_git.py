"""The git state of a folder's repository, read with the ``git`` command (no library).

Every call takes an argument list and a timeout; without git, outside a
repository, or in one without commits, :func:`git_info` returns None.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Seconds one git command may take.
GIT_TIMEOUT = 10.0
#: Largest diff :func:`git_info` returns (``diff=True``); a bigger one is cut with a note.
MAX_DIFF_BYTES = 5 << 20


@dataclass(frozen=True)
class GitInfo:
    """The git state of the repository a folder belongs to."""

    root: str
    commit: str
    #: The branch checked out; ``""`` on a detached HEAD.
    branch: str
    #: True when tracked files have changes, staged or not (untracked files do not count).
    dirty: bool
    #: How many untracked files there are (not ignored ones).
    untracked: int
    #: ``git status --porcelain``: the changed files, untracked ones included.
    status: str
    #: ``git diff HEAD`` (staged and unstaged changes to tracked files) when asked for, else "".
    diff: str = ""


def _git(git: str, where: Path, *args: str) -> str | None:
    """The output of ``git -C where ARGS``, or None when it fails or takes too long."""
    try:
        done = subprocess.run(
            [git, "-C", str(where), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace")


def git_info(path: str | os.PathLike[str] | None = None, *, diff: bool = False) -> GitInfo | None:
    """Commit, branch and uncommitted changes of the repository holding ``path`` (a file
    or folder; default: the working directory).

    ``diff`` also reads ``git diff HEAD``, cut at :data:`MAX_DIFF_BYTES`. None when
    git is missing or ``path`` is not inside a repository with a commit.
    """
    git = shutil.which("git")
    if git is None:
        return None
    where = Path(path) if path is not None else Path.cwd()
    if where.is_file():
        where = where.parent
    if not where.is_dir():
        return None
    root = _git(git, where, "rev-parse", "--show-toplevel")
    commit = _git(git, where, "rev-parse", "HEAD")
    if root is None or not commit or not commit.strip():
        return None
    branch = (_git(git, where, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    status = _git(git, where, "status", "--porcelain") or ""
    lines = [line for line in status.splitlines() if line.strip()]
    untracked = sum(line.startswith("??") for line in lines)
    changes = ""
    if diff:
        changes = _git(git, where, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
        if len(changes.encode()) > MAX_DIFF_BYTES:
            changes = changes.encode()[:MAX_DIFF_BYTES].decode("utf-8", errors="ignore")
            changes += f"\n# forgeml: diff cut at {MAX_DIFF_BYTES} bytes\n"
    return GitInfo(
        root=root.strip(),
        commit=commit.strip(),
        branch=branch if branch != "HEAD" else "",
        dirty=len(lines) > untracked,
        untracked=untracked,
        status=status,
        diff=changes,
    )
