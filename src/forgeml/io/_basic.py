"""Formats built on the standard library and numpy: .json, .yaml, .npy, .npz, .pkl."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from forgeml._core._errors import ConfigError, FormatError
from forgeml.io._format import Format

if TYPE_CHECKING:
    import numpy as np

# Where `!include` in YAML given as bytes would resolve: a directory that holds nothing,
# so in-memory YAML cannot read files.
_NO_INCLUDE_ROOT = Path("/<forgeml-in-memory>")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(
        f"JSON cannot hold a {type(value).__module__}.{type(value).__qualname__}; "
        f"it holds dicts, lists, strings, numbers, booleans and None. "
        f"Save arrays to .npz, .safetensors or .h5 (or convert with .tolist())"
    )


class JsonFormat(Format):
    """Plain data as UTF-8 JSON; numpy scalars are written as Python numbers."""

    name = "json"
    suffixes = (".json",)
    save_options = ("indent", "sort_keys")

    def dumps(self, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> bytes:
        text = json.dumps(
            obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, default=_json_default
        )
        return (text + "\n").encode("utf-8")

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        return json.loads(data.decode("utf-8")), {}


class YamlFormat(Format):
    """Plain data as YAML, read and written like forgeml config files (safe loader only).

    YAML 1.2 floats (``1e-3``) load as floats. ``!include`` resolves next to the
    file and may not leave its directory; from bytes it cannot include at all.
    A top-level ``import:`` key is read as a config ``import:`` block.
    """

    name = "yaml"
    suffixes = (".yaml", ".yml")

    def dumps(self, obj: Any) -> bytes:
        from forgeml.config._loader import dump_yaml

        try:
            return dump_yaml(obj).encode("utf-8")
        except ConfigError as exc:
            raise FormatError(str(exc)) from None

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        return self._parse(path.read_bytes(), path.resolve(), path.resolve().parent)

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        return self._parse(data, _NO_INCLUDE_ROOT / "<bytes>", _NO_INCLUDE_ROOT)

    def _parse(self, data: bytes, path: Path, root: Path) -> tuple[Any, dict[str, Any]]:
        from forgeml.config._loader import _Context, parse_yaml

        try:
            return parse_yaml(data.decode("utf-8"), path=path, context=_Context(root)), {}
        except ConfigError as exc:
            raise FormatError(str(exc)) from None


def _as_array(value: Any, what: str) -> np.ndarray[Any, Any]:
    import numpy as np

    try:
        array = np.asarray(value)
    except Exception as exc:
        raise FormatError(
            f"{what} must be an array or array-like. Got {type(value).__name__}: {exc}"
        ) from None
    if array.dtype.hasobject:
        raise FormatError(
            f"{what} is an array of Python objects ({type(value).__name__}), which only "
            f"pickle can store. Convert it to a numeric, bool or string array."
        )
    return array


def _array_mapping(obj: Any, fmt: str, one_array: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise FormatError(
            f"A {fmt} file holds a mapping of names to arrays. Got {type(obj).__name__}. "
            f"{one_array}"
        )
    for key in obj:
        if not isinstance(key, str) or not key:
            raise FormatError(
                f"Array names in a {fmt} file must be non-empty strings. Got {key!r}."
            )
    return dict(obj)


class NpyFormat(Format):
    """One numpy array (never pickled)."""

    name = "npy"
    suffixes = (".npy",)

    def write(self, obj: Any, f: IO[bytes]) -> None:
        import numpy as np

        array = _as_array(obj, "The object saved to .npy")
        np.lib.format.write_array(f, array, allow_pickle=False)

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        import numpy as np

        return np.load(path, allow_pickle=False), {}

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False), {}


class NpzFormat(Format):
    """Named numpy arrays in a zip (never pickled); ``compressed=True`` deflates them."""

    name = "npz"
    suffixes = (".npz",)
    save_options = ("compressed",)

    def write(self, obj: Any, f: IO[bytes], *, compressed: bool = False) -> None:
        import numpy as np

        arrays = _array_mapping(obj, ".npz", "Save a single array to .npy.")
        method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        # Written member by member (what np.savez does), so any name works as a key.
        with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as archive:
            for key, value in arrays.items():
                array = _as_array(value, f"Array {key!r}")
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        return self._load(path)

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        return self._load(io.BytesIO(data))

    def _load(self, source: Path | IO[bytes]) -> tuple[Any, dict[str, Any]]:
        import numpy as np

        with np.load(source, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}, {}


class PickleFormat(Format):
    """Any picklable object. Loading a pickle can run code: only with ``trust=True``."""

    name = "pkl"
    suffixes = (".pkl", ".pickle")
    needs_trust = True

    def write(self, obj: Any, f: IO[bytes]) -> None:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        with path.open("rb") as f:
            return pickle.load(f), {}  # the caller passed trust=True

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        return pickle.loads(data), {}  # the caller passed trust=True
