"""``load_state_dict_from_url``: torch.hub's function, over forgeml's cache and safe loaders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forgeml._core._errors import HubError
from forgeml.hub._download import fetch
from forgeml.hub._urls import hash_prefix, source_of
from forgeml.store._progress import ProgressArg

#: Suffixes of files ``torch.save`` writes, loaded weights-only.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)


def load_state_dict_from_url(
    url: str | os.PathLike[str],
    model_dir: str | os.PathLike[str] | None = None,
    map_location: Any = None,
    force_reload: bool = False,
    check_hash: bool = True,
    sha256: str | None = None,
    *,
    progress: ProgressArg = None,
    file_name: str | None = None,
) -> dict[str, Any]:
    """Download a checkpoint (see :func:`download`) and load its tensors, weights only.

    Like ``torch.hub.load_state_dict_from_url``: the file is cached (under
    ``model_dir`` when given, else ``$FORGEML_CACHE``), verified, then loaded:
    ``.safetensors`` through :func:`forgeml.io.load` (``framework="torch"``),
    ``.pt``/``.pth``/``.bin``/``.ckpt`` through its weights-only ``torch.load``,
    which refuses anything but tensors and plain containers.
    ``sha256`` is always checked when given. Without it, ``check_hash=True``
    follows torch.hub's convention: a file named ``name-<hex>.ext`` (8 to 64
    hex digits) must have a sha256 starting with ``<hex>``. ``file_name``
    names the cached file (and so its format and hash prefix) when the URL's
    last segment does not. ``map_location`` is passed to ``torch.load``; for
    ``.safetensors`` it must name a device (``"cpu"``, ``"cuda:0"``).
    """
    name = file_name or source_of(os.fspath(url)).name
    prefix = hash_prefix(name) if check_hash and sha256 is None else None
    path = fetch(
        os.fspath(url),
        sha256=sha256,
        sha256_prefix=prefix,
        progress=progress,
        force=force_reload,
        root=Path(model_dir).expanduser().absolute() if model_dir is not None else None,
        name=file_name,
    )
    return load_state_dict(path, map_location=map_location, name=name)


def load_state_dict(
    path: Path, *, map_location: Any = None, name: str | None = None
) -> dict[str, Any]:
    """Load a ``.safetensors`` or torch file's tensors (weights only), by ``name``'s suffix."""
    import forgeml.io as fio

    suffix = Path(name or path.name).suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = fio.load(path, fmt="safetensors", framework="torch", device=_device(map_location))
    elif suffix in TORCH_SUFFIXES:
        state = fio.load(path, fmt="pt", map_location=map_location)
    else:
        known = ", ".join((*SAFETENSORS_SUFFIXES, *TORCH_SUFFIXES))
        raise HubError(
            f"Cannot tell how to load '{name or path.name}' as a state dict from its suffix "
            f"{suffix!r}. Known: {known}. Pass file_name='NAME.pt' (or .safetensors) when the "
            f"URL's last segment has no suffix."
        )
    if not isinstance(state, Mapping):
        raise HubError(
            f"'{name or path.name}' holds a {type(state).__name__}, not a state dict (a "
            f"mapping of names to tensors). Load it with forgeml.io.load instead."
        )
    return dict(state)


def _device(map_location: Any) -> str:
    if map_location is None:
        return "cpu"
    if callable(map_location) or isinstance(map_location, Mapping):
        raise HubError(
            f".safetensors files are placed on one device: map_location must name it, such "
            f"as 'cpu' or 'cuda:0'. Got {type(map_location).__name__}."
        )
    return str(map_location)
