"""``<file>.sha256`` sidecars in ``sha256sum`` format: write them, check files against them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from forgeml._core._errors import FormatError
from forgeml._core._files import atomic_write_text
from forgeml._core._hashing import sha256_file

SIDECAR_SUFFIX = ".sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the checksum of ``path`` lives: ``<path>.sha256``."""
    target = Path(path)
    return target.with_name(target.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike[str], digest: str) -> Path:
    """Write ``digest`` as the checksum of ``path`` (``sha256sum -c`` reads it)."""
    target = Path(path)
    sidecar = sidecar_path(target)
    atomic_write_text(sidecar, f"{digest}  {target.name}\n")
    return sidecar


def write_checksum(path: str | os.PathLike[str]) -> str:
    """Hash ``path`` and write ``<path>.sha256``; return the hex digest.

    Use it for a file made without :func:`forgeml.io.save`, or to accept a
    file's current contents after checking them by other means.
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(2, "No such file", str(target))
    digest = sha256_file(target)
    write_sidecar(target, digest)
    return digest


def read_sidecar(path: str | os.PathLike[str]) -> str:
    """The digest recorded in ``<path>.sha256``."""
    target = Path(path)
    sidecar = sidecar_path(target)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(
            f"No checksum for '{target}': '{sidecar}' does not exist, so it cannot be "
            f"verified. Files saved by forgeml.io.save get one; for another file you trust, "
            f"create it with forgeml.io.write_checksum('{target}')."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"Cannot read the checksum file '{sidecar}': {exc}.") from None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if not _HEX.fullmatch(digest):
        raise FormatError(
            f"The checksum file '{sidecar}' is malformed: expected '<64 hex digits>  "
            f"{target.name}', got {text[:100]!r}. Recreate it with "
            f"forgeml.io.write_checksum('{target}') if you trust the file."
        )
    return digest


def verify_checksum(path: str | os.PathLike[str], expected: str | None = None) -> str:
    """Check ``path`` against ``expected`` (a hex digest) or its ``.sha256`` sidecar.

    Returns the digest; raises :class:`~forgeml.FormatError` naming both digests
    when they differ.
    """
    target = Path(path)
    if expected is None:
        expected = read_sidecar(target)
        source = f"recorded in '{sidecar_path(target).name}'"
    else:
        expected = expected.strip().lower()
        if not _HEX.fullmatch(expected):
            raise FormatError(
                f"expected= must be a SHA-256 hex digest (64 hex digits). Got {expected!r}."
            )
        source = "expected"
    if not target.is_file():
        raise FileNotFoundError(2, "No such file", str(target))
    actual = sha256_file(target)
    if actual != expected:
        raise FormatError(
            f"Checksum mismatch for '{target}': {source} sha256 {expected}, but the file "
            f"hashes to {actual}. The file is damaged or was changed after it was saved; "
            f"save it again, or if its current contents are trusted, record them with "
            f"forgeml.io.write_checksum('{target}')."
        )
    return actual
