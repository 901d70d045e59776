"""The ``.safetensors`` format: a flat mapping of names to arrays or tensors.

numpy arrays and CPU torch tensors are written straight from their memory
(no copy), in the layout ``safetensors`` itself writes: an 8-byte
little-endian header length, a JSON header padded with spaces to 8 bytes,
then each tensor's bytes, largest item size first so every tensor is aligned.
Tensors that share memory go through ``safetensors.torch.save``, which refuses
them with an explanation. Files load through ``safetensors.numpy`` or
``safetensors.torch``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from forgeml._core._errors import FormatError, did_you_mean
from forgeml.io._basic import _array_mapping, _as_array
from forgeml.io._format import Format, require
from forgeml.io._torch import torch_adapter

if TYPE_CHECKING:
    import numpy as np

#: numpy dtype names and their safetensors codes (what ``safetensors.numpy`` reads back)
NUMPY_CODES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "float16": "F16",
    "int32": "I32",
    "uint32": "U32",
    "float32": "F32",
    "int64": "I64",
    "uint64": "U64",
    "float64": "F64",
    "complex64": "C64",
}
#: the largest header ``safetensors`` accepts
MAX_HEADER_BYTES = 100_000_000
FRAMEWORKS = ("numpy", "torch")
_FRAMEWORK_ALIASES = {"np": "numpy", "pytorch": "torch"}
_HINT = "pip install safetensors"


class SafetensorsFormat(Format):
    """Named numpy arrays or torch tensors; ``meta`` is a mapping of strings to strings."""

    name = "safetensors"
    suffixes = (".safetensors",)
    load_options = ("framework", "device", "mmap")
    stores_meta = True

    def write(self, obj: Any, f: IO[bytes], *, meta: Mapping[str, Any] | None = None) -> None:
        tensors = _array_mapping(obj, ".safetensors", "Save a single array to .npy.")
        if "__metadata__" in tensors:
            raise FormatError(
                "'__metadata__' is reserved in .safetensors files; rename that tensor "
                "(metadata goes in meta=)."
            )
        metadata = _check_meta(meta)
        if not _holds_torch(tensors.values()):
            _write_arrays(_numpy_entries(tensors), metadata, f)
            return
        torch = torch_adapter()
        views = torch.safetensors_arrays(tensors)
        if views is None:  # shared memory or an unusual dtype: let safetensors.torch decide
            f.write(torch.safetensors_dumps(tensors, metadata))
        else:
            entries = [(key, code, _contiguous(array)) for key, (code, array) in views.items()]
            _write_arrays(entries, metadata, f)

    def read(
        self, path: Path, *, framework: str = "numpy", device: str = "cpu", mmap: bool = True
    ) -> tuple[Any, dict[str, Any]]:
        """Read a file; numpy arrays are memory-mapped unless ``mmap=False``.

        Mapped arrays are copy-on-write (writable, changes stay in memory) and read
        from the file only as they are used. forgeml replaces files by renaming, so a
        mapped file stays valid after a later save; a tool that rewrites the file in
        place while it is mapped can crash the reader, which ``mmap=False`` avoids.
        """
        framework = _check_framework(framework, device)
        size = path.stat().st_size
        with path.open("rb") as f:
            first = f.read(8)
            header = _parse_header(first, f.read, size, f"'{path}'")
        meta = dict(header.get("__metadata__") or {})
        if framework == "torch":
            return torch_adapter().safetensors_load(path, device=device), meta
        _check_numpy_dtypes(header, f"'{path}'")
        if mmap:
            start = 8 + int.from_bytes(first, "little")
            return _mapped_arrays(path, header, start, size), meta
        st_numpy = require("safetensors.numpy", "safetensors", _HINT)
        return st_numpy.load_file(path), meta

    def loads(
        self, data: bytes, *, framework: str = "numpy", device: str = "cpu"
    ) -> tuple[Any, dict[str, Any]]:
        framework = _check_framework(framework, device)
        view = memoryview(data)
        header = _parse_header(bytes(view[:8]), _reader(view[8:]), len(data), "The data")
        meta = dict(header.get("__metadata__") or {})
        if framework == "torch":
            return torch_adapter().safetensors_load(data, device=device), meta
        _check_numpy_dtypes(header, "The data")
        st_numpy = require("safetensors.numpy", "safetensors", _HINT)
        return st_numpy.load(bytes(data)), meta


def _mapped_arrays(
    path: Path, header: Mapping[str, Any], start: int, size: int
) -> dict[str, np.ndarray[Any, Any]]:
    """Arrays viewing one copy-on-write map of the file, checked against the header."""
    import numpy as np

    dtypes = {code: np.dtype(name).newbyteorder("<") for name, code in NUMPY_CODES.items()}
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    if not entries:
        return {}
    mapped = np.memmap(path, dtype=np.uint8, mode="c")
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for key, info in entries:
        try:
            dtype = dtypes[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"'{path}' has a damaged header entry for {key!r}.") from None
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= begin <= end <= size - start or end - begin != expected:
            raise FormatError(
                f"'{path}' is damaged or truncated: tensor {key!r} claims bytes {begin}..{end} "
                f"for shape {shape} of {dtype.name}, in {size - start} bytes of data."
            )
        arrays[key] = np.asarray(mapped[start + begin : start + end]).view(dtype).reshape(shape)
    return arrays


def _reader(view: memoryview) -> Callable[[int], bytes]:
    def read(n: int) -> bytes:
        return bytes(view[:n])

    return read


def _holds_torch(values: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    return any(type(v).__module__.partition(".")[0] == "torch" for v in values)


def _check_meta(meta: Mapping[str, Any] | None) -> dict[str, str] | None:
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise FormatError(
            f"meta= must be a mapping of strings to strings. Got {type(meta).__name__}."
        )
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FormatError(
                f".safetensors metadata maps strings to strings. Got {key!r}: {value!r} "
                f"({type(value).__name__}). Convert the values with str(), or use .h5, "
                f"whose meta= holds numbers and booleans too."
            )
    return dict(meta)


def _check_framework(framework: str, device: str) -> str:
    name = _FRAMEWORK_ALIASES.get(framework, framework)
    if name not in FRAMEWORKS:
        raise FormatError(
            f"framework= picks the tensor type .safetensors loads into: one of "
            f"{', '.join(FRAMEWORKS)}. Got {framework!r}." + did_you_mean(framework, FRAMEWORKS)
        )
    if name == "numpy" and device != "cpu":
        raise FormatError(
            f"device= places torch tensors; numpy arrays live on the CPU. Got device={device!r} "
            f"with framework='numpy'. Pass framework='torch'."
        )
    return name


def _parse_header(
    first: bytes, read: Callable[[int], bytes], size: int, where: str
) -> dict[str, Any]:
    if len(first) < 8:
        raise FormatError(f"{where} is {size} bytes long: too short for a .safetensors file.")
    length = int.from_bytes(first, "little")
    if length > MAX_HEADER_BYTES or length > size - 8:
        raise FormatError(
            f"{where} is not a .safetensors file, or is truncated: its header claims "
            f"{length} bytes, and the file is {size} bytes long."
        )
    try:
        header = json.loads(read(length))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{where} has a damaged .safetensors header: {exc}.") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where} has a damaged .safetensors header (not a JSON object).")
    return header


def _check_numpy_dtypes(header: Mapping[str, Any], where: str) -> None:
    readable = set(NUMPY_CODES.values())
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, Mapping):
            continue
        dtype = info.get("dtype")
        if dtype not in readable:
            raise FormatError(
                f"{where} holds {dtype} tensors (e.g. {key!r}), which numpy cannot represent. "
                f"Load it with framework='torch'."
            )


def _contiguous(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _numpy_entries(tensors: Mapping[str, Any]) -> list[tuple[str, str, np.ndarray[Any, Any]]]:
    entries = []
    for key, value in tensors.items():
        array = _as_array(value, f"Tensor {key!r}")
        code = NUMPY_CODES.get(array.dtype.name)
        if code is None:
            raise FormatError(
                f"Tensor {key!r} has dtype {array.dtype}, which .safetensors cannot hold. "
                f"Supported: {', '.join(NUMPY_CODES)}. Convert it (e.g. .astype(np.float32)) "
                f"or save to .npz or .h5."
            )
        if array.dtype.byteorder == ">" or (
            array.dtype.byteorder == "=" and sys.byteorder == "big"
        ):
            array = array.astype(array.dtype.newbyteorder("<"))
        entries.append((key, code, _contiguous(array)))
    return entries


def _write_arrays(
    entries: list[tuple[str, str, np.ndarray[Any, Any]]],
    metadata: dict[str, str] | None,
    f: IO[bytes],
) -> None:
    """Write (name, safetensors dtype code, C-contiguous little-endian array) entries."""
    import numpy as np

    # Largest items first: with the 8-byte aligned header every tensor starts aligned.
    entries = sorted(entries, key=lambda entry: (-entry[2].dtype.itemsize, entry[0]))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for key, code, array in entries:
        end = offset + array.nbytes
        header[key] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    f.write(len(raw).to_bytes(8, "little") + raw)
    for _, _, array in entries:
        if array.nbytes:
            f.write(array.reshape(-1).view(np.uint8).data)
