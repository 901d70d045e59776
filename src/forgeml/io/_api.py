"""``save``/``load`` by suffix, atomic and checksummed; ``save_bytes``/``load_bytes`` in memory."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Literal, cast, overload

from forgeml._core._errors import ForgeMLError, FormatError, did_you_mean
from forgeml._core._files import atomic_open
from forgeml._core._hashing import HashingWriter
from forgeml.io._checksum import sidecar_path, verify_checksum, write_sidecar
from forgeml.io._format import FORMATS, SAFE_ALTERNATIVES, Format, format_for_path, get_format

# Errors that mean something other than "this object or file does not fit the format".
_PASS_THROUGH = (ForgeMLError, MemoryError, FileNotFoundError, PermissionError, IsADirectoryError)


def _text(exc: BaseException) -> str:
    """An exception's message on one line, ending with a full stop."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith((".", "?", "!")) else f"{text}."


def _handler(fmt: str | None, path: Path | None = None) -> Format:
    if fmt is not None:
        if not isinstance(fmt, str):
            raise FormatError(
                f"fmt= names a format ({', '.join(FORMATS.names())}) or a suffix such as "
                f"'.h5'. Got {fmt!r}."
            )
        return get_format(fmt)
    assert path is not None
    return format_for_path(path)


def _options(
    handler: Format,
    action: Literal["save", "load"],
    opts: Mapping[str, Any],
    *,
    trust: bool,
    meta: Mapping[str, Any] | None = None,
    where: str,
) -> dict[str, Any]:
    allowed = handler.save_options if action == "save" else handler.load_options
    public = [name for name in allowed if name not in ("trust", "meta")]
    unknown = sorted(set(opts) - set(public))
    if unknown:
        raise FormatError(
            f"{action}() takes no option {unknown[0]!r} for {handler.name} files. "
            f"Options: {', '.join(public) or 'none'}." + did_you_mean(unknown[0], public)
        )
    if handler.needs_trust and not trust:
        verb = "load" if action == "load" else "write"
        raise FormatError(
            f"Refusing to {verb} {where} in {handler.name} format without trust=True: loading "
            f"{handler.name} files can run arbitrary code. Pass trust=True if you trust the "
            f"file and everyone who can write it, or use a safe format: {SAFE_ALTERNATIVES}."
        )
    kwargs = dict(opts)
    if "trust" in allowed:
        kwargs["trust"] = trust
    if meta is not None:
        if not handler.stores_meta:
            keeping = [n for n in FORMATS.names() if _stores_meta(n)]
            raise FormatError(
                f"{handler.name} files cannot hold meta=; formats that do: "
                f"{', '.join(keeping)}. Use one of them, or save the metadata next to "
                f"the file (e.g. as .json)."
            )
        kwargs["meta"] = meta
    return kwargs


def _stores_meta(name: str) -> bool:
    try:
        return get_format(name).stores_meta
    except ForgeMLError:
        return False


def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    meta: Mapping[str, Any] | None = None,
    trust: bool = False,
    checksum: bool = True,
    **opts: Any,
) -> Path:
    """Write ``obj`` to ``path`` in the format its suffix names; return the path.

    The write is atomic (a temp file in the same directory, fsync, rename):
    readers see the old file or the whole new one, never a part. A
    ``<path>.sha256`` sidecar records the new contents for ``load(...,
    verify=True)``; ``checksum=False`` skips it (and removes a stale one), for
    files whose digest is kept elsewhere, such as an archive's manifest.
    ``fmt`` overrides the suffix (a format name such as ``"h5"``); ``meta`` is
    metadata for formats that keep it (``.safetensors``: strings; ``.h5``:
    scalars); ``trust=True`` is required for pickles; other keyword options
    belong to the format (see :func:`formats`).
    """
    target = Path(path).expanduser()
    handler = _handler(fmt, target)
    kwargs = _options(handler, "save", opts, trust=trust, meta=meta, where=f"'{target}'")
    try:
        with atomic_open(target, binary=True) as raw:
            if not checksum:
                handler.write(obj, raw, **kwargs)
            else:
                with HashingWriter(raw) as writer:
                    handler.write(obj, cast("IO[bytes]", writer), **kwargs)
                    digest = writer.hexdigest()
    except (*_PASS_THROUGH, OSError):
        raise
    except Exception as exc:
        raise FormatError(
            f"Cannot save {type(obj).__name__} to '{target}' as {handler.name}: {_text(exc)}"
        ) from exc
    if checksum:
        write_sidecar(target, digest)
    else:
        sidecar_path(target).unlink(missing_ok=True)
    return target


@overload
def load(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = ...,
    verify: bool = ...,
    trust: bool = ...,
    with_meta: Literal[False] = ...,
    **opts: Any,
) -> Any: ...


@overload
def load(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = ...,
    verify: bool = ...,
    trust: bool = ...,
    with_meta: Literal[True],
    **opts: Any,
) -> tuple[Any, dict[str, Any]]: ...


def load(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    verify: bool = False,
    trust: bool = False,
    with_meta: bool = False,
    **opts: Any,
) -> Any:
    """Read the file at ``path`` in the format its suffix names.

    ``verify=True`` first checks the file against its ``.sha256`` sidecar.
    ``with_meta=True`` returns ``(data, meta)``, where ``meta`` is the
    ``meta=`` given to :func:`save` (``{}`` for formats without metadata).
    ``trust=True`` admits pickles and ``.pt`` files beyond torch's weights-only
    allowlist. ``.safetensors`` takes ``framework="numpy"`` (default) or
    ``"torch"`` and, for torch, ``device``.
    """
    target = Path(path).expanduser()
    handler = _handler(fmt, target)
    kwargs = _options(handler, "load", opts, trust=trust, where=f"'{target}'")
    if not target.is_file():
        reason = "Not a regular file" if target.exists() else "No such file"
        raise FileNotFoundError(errno.ENOENT, reason, str(target))
    if verify:
        verify_checksum(target)
    try:
        data, meta = handler.read(target, **kwargs)
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise FormatError(
            f"Cannot load '{target}' as {handler.name}: {_text(exc)} If the file may be damaged, "
            f"load(..., verify=True) checks it against its .sha256."
        ) from exc
    return (data, meta) if with_meta else data


def save_bytes(
    obj: Any,
    fmt: str,
    *,
    meta: Mapping[str, Any] | None = None,
    trust: bool = False,
    **opts: Any,
) -> bytes:
    """``obj`` as the bytes of a file in format ``fmt`` (a name like ``"npz"`` or ``".npz"``)."""
    handler = _handler(fmt)
    kwargs = _options(handler, "save", opts, trust=trust, meta=meta, where="the object")
    try:
        return handler.dumps(obj, **kwargs)
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise FormatError(
            f"Cannot save {type(obj).__name__} as {handler.name}: {_text(exc)}"
        ) from exc


@overload
def load_bytes(
    data: bytes,
    fmt: str,
    *,
    trust: bool = ...,
    with_meta: Literal[False] = ...,
    **opts: Any,
) -> Any: ...


@overload
def load_bytes(
    data: bytes,
    fmt: str,
    *,
    trust: bool = ...,
    with_meta: Literal[True],
    **opts: Any,
) -> tuple[Any, dict[str, Any]]: ...


def load_bytes(
    data: bytes,
    fmt: str,
    *,
    trust: bool = False,
    with_meta: bool = False,
    **opts: Any,
) -> Any:
    """Read the bytes of a file in format ``fmt``; options as for :func:`load`."""
    handler = _handler(fmt)
    kwargs = _options(handler, "load", opts, trust=trust, where="the data")
    try:
        value, meta = handler.loads(bytes(data), **kwargs)
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise FormatError(f"Cannot load the data as {handler.name}: {_text(exc)}") from exc
    return (value, meta) if with_meta else value
