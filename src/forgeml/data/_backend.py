"""Leaves of samples by backend: numpy arrays, torch tensors, TensorFlow tensors.

numpy is forgeml.data's own array library; torch and TensorFlow are reached
only through their framework adapters (``forgeml.frameworks``). A leaf's
backend is read from its type's module, so asking imports no framework: a
torch tensor can only exist once torch is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np

from forgeml._core._errors import DataError
from forgeml.data._tree import tree_items, tree_map, tree_zip_map

#: The backends a dataset can hold its elements in.
Backend = Literal["numpy", "torch", "tf"]
BACKENDS: tuple[Backend, ...] = ("numpy", "torch", "tf")
_ADAPTER = {"torch": "torch", "tf": "tensorflow"}
_MODULE_ROOT = {"torch": "torch", "tensorflow": "tf"}


def adapter(backend: str) -> Any:
    """The framework adapter of ``backend`` ("torch" or "tf"); imports that framework."""
    from forgeml.frameworks import get_adapter

    return get_adapter(_ADAPTER[backend])


def leaf_backend(leaf: object) -> str | None:
    """ "numpy", "torch" or "tf" for arrays, tensors and numbers; None for other leaves."""
    if isinstance(leaf, np.ndarray | np.generic):
        return "numpy"
    if isinstance(leaf, bool | int | float | complex):
        return "numpy"
    root = type(leaf).__module__.partition(".")[0]
    backend = _MODULE_ROOT.get(root)
    if backend is not None and root in sys.modules and adapter(backend).data_is_tensor(leaf):
        return backend
    return None


def to_numpy(leaf: Any) -> Any:
    """``leaf`` as a numpy array (numbers as 0-d arrays); other leaves (str, None) unchanged."""
    kind = leaf_backend(leaf)
    if kind == "numpy":
        return leaf if isinstance(leaf, np.ndarray) else np.asarray(leaf)
    if kind is None:
        return leaf
    return adapter(kind).data_to_numpy(leaf)


def convert_leaf(leaf: Any, backend: str) -> Any:
    """``leaf`` in ``backend`` with the same values and dtype; non-array leaves unchanged."""
    kind = leaf_backend(leaf)
    if kind is None or kind == backend:
        return leaf
    array = to_numpy(leaf)
    if backend == "numpy":
        return array
    return adapter(backend).data_from_numpy(array)


def convert(tree: Any, backend: str) -> Any:
    return tree_map(lambda leaf: convert_leaf(leaf, backend), tree)


def leaf_len(leaf: Any, path: str) -> int:
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) == 0:
        raise DataError(
            f"The leaf '{path}' of a batched element has no batch dimension "
            f"({type(leaf).__name__}{'' if shape is None else ' of shape ()'}). Every leaf of a "
            f"batch must be an array or tensor whose first dimension is the batch. HINT: build "
            f"the dataset with batched=False if its elements are single samples."
        )
    size = shape[0]
    if size is None:
        raise DataError(f"The leaf '{path}' has an unknown batch dimension (shape {shape}).")
    return int(size)


def batch_len(batch: Any) -> int:
    """The number of samples in ``batch``: the first dimension, shared by every leaf."""
    sizes = {
        "/".join(str(p) for p in parts) or "<element>": leaf_len(leaf, "/".join(map(str, parts)))
        for parts, leaf in tree_items(batch)
    }
    if not sizes:
        raise DataError("A batched element has no leaves, so it has no batch size.")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{path}: {size}" for path, size in sizes.items())
        raise DataError(
            f"The leaves of a batch have different batch sizes ({listed}). Every leaf of a "
            f"batch must have the same first dimension."
        )
    return next(iter(sizes.values()))


def sample_of(batch: Any, index: int) -> Any:
    """Sample ``index`` of ``batch`` (every leaf indexed on its first dimension)."""
    return tree_map(lambda leaf: leaf[index], batch)


def unstack(batch: Any) -> list[Any]:
    return [sample_of(batch, i) for i in range(batch_len(batch))]


def stack_leaves(leaves: Sequence[Any], backend: str) -> Any:
    """One batch leaf from the same leaf of several samples.

    Arrays and tensors are stacked by their own library; numbers and strings
    become a numpy array, or a tensor of ``backend`` when that holds numbers.
    """
    kinds = {leaf_backend(leaf) for leaf in leaves}
    if len(kinds) == 1 and (kind := next(iter(kinds))) in ("torch", "tf"):
        return adapter(kind).data_stack(list(leaves))
    if kinds - {"numpy"}:
        names = sorted({type(leaf).__name__ for leaf in leaves})
        if kinds == {None} and all(isinstance(leaf, str | bytes) for leaf in leaves):
            return np.asarray(leaves)
        raise DataError(
            f"Cannot batch leaves of types {', '.join(names)} together. A batch leaf is made "
            f"from arrays or tensors of one library, or from numbers or strings. HINT: convert "
            f"the elements first (.numpy(), .torch() or .tf())."
        )
    try:
        array = np.stack([np.asarray(leaf) for leaf in leaves])
    except ValueError as exc:
        shapes = sorted({str(np.shape(leaf)) for leaf in leaves})
        raise DataError(
            f"Cannot batch samples whose leaves have different shapes ({', '.join(shapes)}): "
            f"{exc}. HINT: resize or pad them to one shape first (map_el)."
        ) from None
    if backend != "numpy" and all(not isinstance(leaf, np.ndarray) for leaf in leaves):
        return convert_leaf(array, backend)
    return array


def stack(samples: Sequence[Any], backend: str) -> Any:
    """One batch from samples of the same structure."""
    if not samples:
        raise DataError("Cannot make a batch of no samples.")
    return tree_zip_map(lambda leaves: stack_leaves(leaves, backend), samples)


# --- array operations for transforms: the same code on numpy arrays and torch tensors ---


class NumpyOps:
    """Operations on numpy arrays (the reference the torch adapter's ``data_*`` methods follow)."""

    name = "numpy"

    def take(self, x: Any, indices: np.ndarray, axis: int) -> Any:
        return np.take(x, indices, axis=axis)

    def flip(self, x: Any, axis: int) -> Any:
        return np.flip(x, axis=axis)

    def constant(self, values: np.ndarray, like: Any) -> Any:
        return values.astype(like.dtype, copy=False)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype)

    def cast(self, x: Any, dtype: str) -> Any:
        try:
            return x.astype(np.dtype(dtype), copy=False)
        except TypeError:
            raise DataError(
                f"numpy has no dtype {dtype!r}. Use a numpy dtype name such as 'float32', "
                f"'uint8' or 'bool'."
            ) from None

    def is_floating(self, x: Any) -> bool:
        return bool(np.issubdtype(x.dtype, np.floating))

    def int_range(self, x: Any) -> tuple[int, int]:
        if x.dtype == np.bool_:
            return 0, 1
        info = np.iinfo(x.dtype)
        return int(info.min), int(info.max)


class AdapterOps:
    """The same operations through a framework adapter's ``data_*`` methods."""

    def __init__(self, name: str, adapter: Any) -> None:
        self.name = name
        self._adapter = adapter

    def take(self, x: Any, indices: np.ndarray, axis: int) -> Any:
        return self._adapter.data_take(x, indices, axis)

    def flip(self, x: Any, axis: int) -> Any:
        return self._adapter.data_flip(x, axis)

    def constant(self, values: np.ndarray, like: Any) -> Any:
        return self._adapter.data_constant(values, like)

    def dtype_name(self, x: Any) -> str:
        return cast(str, self._adapter.data_dtype_name(x))

    def cast(self, x: Any, dtype: str) -> Any:
        return self._adapter.data_cast(x, dtype)

    def is_floating(self, x: Any) -> bool:
        return bool(self._adapter.data_is_floating(x))

    def int_range(self, x: Any) -> tuple[int, int]:
        low, high = self._adapter.data_int_range(x)
        return int(low), int(high)


Ops = NumpyOps | AdapterOps
_NUMPY_OPS = NumpyOps()


def worker_id() -> int | None:
    """The id of the torch DataLoader worker this process is, or None (imports nothing)."""
    if "torch" not in sys.modules:
        return None
    info = adapter("torch").data_worker_info()
    return None if info is None else int(info[0])


def ops_for(leaf: Any, step: str, path: str = "") -> Ops:
    """The operations for ``leaf``: numpy arrays and torch tensors are supported."""
    kind = leaf_backend(leaf)
    if kind == "numpy" and isinstance(leaf, np.ndarray):
        return _NUMPY_OPS
    if kind == "torch":
        return AdapterOps("torch", adapter("torch"))
    where = f"the leaf '{path}' is" if path else "got"
    raise DataError(
        f"{step} works on numpy arrays and torch tensors; {where} a "
        f"{type(leaf).__module__}.{type(leaf).__qualname__}. HINT: convert the dataset with "
        f".numpy() or .torch() before mapping the transform, or pick other leaves with keys=."
    )
