"""Checks shared by the state adapters when they read back what ``save_state`` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml._core._errors import ObjectError


def check_format(adapter: str, info: dict[str, Any], expected: str) -> None:
    """Refuse state info written by another adapter."""
    if info.get("format") != expected:
        raise ObjectError(
            f"The {adapter} adapter loads state of format '{expected}'. Got "
            f"{info.get('format')!r}. Was it saved by another adapter?"
        )


def state_file(adapter: str, directory: Path, info: dict[str, Any], suffix: str) -> Path:
    """The one file named in ``info["files"]`` ending with ``suffix``; it must exist.

    Only plain names count, so a tampered info cannot point outside ``directory``.
    """
    files = info.get("files") or []
    names = [n for n in files if isinstance(n, str) and n.endswith(suffix)]
    if len(names) != 1 or Path(names[0]).name != names[0]:
        raise ObjectError(
            f"The {adapter} state info should name one '*{suffix}' file. Got files="
            f"{files!r}. Pass the info that save_state returned."
        )
    path = Path(directory) / names[0]
    if not path.is_file():
        raise ObjectError(f"The {adapter} state file {path} does not exist.")
    return path
