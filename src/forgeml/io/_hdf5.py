"""The ``.h5``/``.hdf5`` format: nested mappings of arrays and scalars, Zstd-compressed.

A mapping becomes a group, an array a dataset, and a scalar (bool, int, float,
str, bytes, numpy scalar) an attribute of its group. ``meta=`` becomes
attributes of the root group, listed in the root attribute ``forgeml.meta``
so that loading can tell them from data. Datasets of at least
:data:`COMPRESS_MIN_BYTES` are compressed with Zstd (``hdf5plugin``) by
default; other HDF5 tools need ``hdf5plugin`` (or ``compression="gzip"``) to
read them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from forgeml._core._errors import FormatError, did_you_mean
from forgeml.io._basic import _as_array
from forgeml.io._format import Format, require

#: the root attribute that lists the names of the ``meta=`` attributes
META_ATTR = "forgeml.meta"
#: smaller datasets (and scalars) are stored uncompressed: chunking would cost more than it saves
COMPRESS_MIN_BYTES = 1024
#: compression name -> (default level, lowest level, highest level)
COMPRESSIONS = {"zstd": (3, 1, 22), "gzip": (4, 0, 9)}
_HINT = "pip install h5py hdf5plugin"


def _modules() -> tuple[ModuleType, ModuleType]:
    h5py = require("h5py", "h5", _HINT)
    hdf5plugin = require("hdf5plugin", "h5", _HINT)  # registers the Zstd filter with HDF5
    return h5py, hdf5plugin


class HDF5Format(Format):
    """Nested mappings of arrays (datasets) and scalars (attributes).

    Options: ``compression`` (``"zstd"``, the default, ``"gzip"`` or ``None``),
    ``complevel`` (Zstd 1-22, default 3; gzip 0-9, default 4) and ``shuffle``
    (byte-shuffle multi-byte items before compressing, default true).
    """

    name = "h5"
    suffixes = (".h5", ".hdf5")
    save_options = ("compression", "complevel", "shuffle")
    stores_meta = True

    def dumps(
        self,
        obj: Any,
        *,
        meta: Mapping[str, Any] | None = None,
        compression: str | None = "zstd",
        complevel: int | None = None,
        shuffle: bool = True,
    ) -> bytes:
        filters = _filters(compression, complevel)
        if not isinstance(obj, Mapping):
            raise FormatError(
                f"An .h5 file holds a mapping (nested mappings become groups). "
                f"Got {type(obj).__name__}. Wrap it, e.g. {{'data': array}}."
            )
        if meta is not None and not isinstance(meta, Mapping):
            raise FormatError(f"meta= must be a mapping. Got {type(meta).__name__}.")
        h5py, _ = _modules()
        with h5py.File.in_memory(track_order=True) as f:
            _write_group(h5py, f, obj, "", filters, shuffle)
            if META_ATTR in f.attrs:
                raise FormatError(
                    f"{META_ATTR!r} is reserved at the top level of .h5 files; rename that key."
                )
            if meta:
                _write_meta(f, meta)
            f.flush()
            return bytes(f.id.get_file_image())

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        h5py, _ = _modules()
        with h5py.File(path, "r") as f:
            return _read_root(h5py, f)

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        h5py, _ = _modules()
        with h5py.File.in_memory(data) as f:
            return _read_root(h5py, f)


def _filters(compression: str | None, complevel: int | None) -> dict[str, Any]:
    if not compression:  # None (or False): store uncompressed
        return {}
    if compression not in COMPRESSIONS:
        known = ", ".join([*COMPRESSIONS, "None"])
        raise FormatError(
            f"Unknown .h5 compression {compression!r}. Known: {known}."
            + did_you_mean(str(compression), COMPRESSIONS)
        )
    default, low, high = COMPRESSIONS[compression]
    level = default if complevel is None else complevel
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise FormatError(
            f"complevel for {compression} must be an integer from {low} to {high}. "
            f"Got {complevel!r}."
        )
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    _, hdf5plugin = _modules()
    return dict(hdf5plugin.Zstd(clevel=level))


def _is_scalar(value: Any) -> bool:
    import numpy as np

    if isinstance(value, (bool, int, float, str, bytes)):
        return True
    return isinstance(value, np.generic) and not value.dtype.hasobject


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key or "/" in key or key == ".":
        raise FormatError(
            f"Names in an .h5 file must be non-empty strings without '/' (and not '.'). "
            f"Got {key!r} in {where or '/'}."
        )


def _write_group(
    h5py: ModuleType,
    group: Any,
    mapping: Mapping[Any, Any],
    where: str,
    filters: Mapping[str, Any],
    shuffle: bool,
) -> None:
    for key, value in mapping.items():
        _check_key(key, where)
        path = f"{where}/{key}"
        if isinstance(value, Mapping):
            _write_group(
                h5py, group.create_group(key, track_order=True), value, path, filters, shuffle
            )
        elif value is None:
            raise FormatError(
                f"{path} is None, which HDF5 cannot store. Leave the key out, or use .json."
            )
        elif _is_scalar(value):
            group.attrs[key] = value
        else:
            array = _as_array(value, path)
            if array.dtype.kind == "U":
                raise FormatError(
                    f"{path} is an array of strings; .h5 files made by forgeml hold strings "
                    f"as scalar attributes only. Store it in .json/.yaml, or as a bytes array "
                    f"(np.char.encode)."
                )
            options: dict[str, Any] = {}
            if filters and array.ndim and array.nbytes >= COMPRESS_MIN_BYTES:
                options.update(filters)
                if shuffle and array.dtype.itemsize > 1:
                    options["shuffle"] = True
            group.create_dataset(key, data=array, **options)


def _write_meta(f: Any, meta: Mapping[str, Any]) -> None:
    for key, value in meta.items():
        _check_key(key, "meta=")
        if key == META_ATTR or key in f.attrs:
            raise FormatError(
                f"meta= key {key!r} clashes with a top-level scalar of the data (both are "
                f"attributes of the root group). Rename one of them."
            )
        if not _is_scalar(value):
            raise FormatError(
                f"meta= values in .h5 are scalars (str, int, float, bool). Got {key!r}: "
                f"{type(value).__name__}. Put arrays in the data instead."
            )
        f.attrs[key] = value
    f.attrs[META_ATTR] = json.dumps(list(meta))


def _read_root(h5py: ModuleType, f: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    meta_keys: list[str] = []
    if META_ATTR in f.attrs:
        listed = json.loads(_attr_value(f.attrs[META_ATTR]))
        meta_keys = [k for k in listed if isinstance(k, str) and k in f.attrs]
    meta = {key: _attr_value(f.attrs[key]) for key in meta_keys}
    return _read_group(h5py, f, skip={META_ATTR, *meta_keys}), meta


def _read_group(h5py: ModuleType, group: Any, skip: set[str] | frozenset[str] = frozenset()) -> Any:
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_group(h5py, item)
        elif isinstance(item, h5py.Dataset):
            out[key] = _read_dataset(h5py, item)
    for key, value in group.attrs.items():
        if key not in skip:
            out[key] = _attr_value(value)
    return out


def _read_dataset(h5py: ModuleType, dataset: Any) -> Any:
    import numpy as np

    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()]
    value = dataset[()]
    if isinstance(value, h5py.Empty):
        return None
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _attr_value(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return value
