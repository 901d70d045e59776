"""Datasets: lazy chains of transformations over numpy, torch and TensorFlow data."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Self, cast

import numpy as np

from forgeml._core._errors import DataError
from forgeml.data._backend import adapter, convert, convert_leaf, leaf_backend
from forgeml.data._nodes import (
    ArraySource,
    Batch,
    BufferShuffle,
    Convert,
    Fixed,
    IterSource,
    Map,
    MapEl,
    Node,
    Permutation,
    Pick,
    SequenceSource,
    Skip,
    Take,
    TFSource,
    Unbatch,
    Window,
    check_pair,
)
from forgeml.data._tree import is_container, tree_leaves, tree_map


class Dataset:
    """A lazy, re-iterable sequence of elements, in one backend (numpy, torch or TensorFlow).

    Build one with :class:`NumpyDataset`, :class:`TorchDataset` or
    :class:`TFDataset`. Every method returns a new dataset that describes a
    chain of transformations; nothing is computed until the dataset is
    iterated, indexed, peeked at or collected, and each pass computes again.

    Three flags describe the elements:

    - ``batched``: every element is a batch, whose arrays share a first
      (batch) dimension; :meth:`unbatch` yields its samples one by one.
    - ``supervised``: every element is an ``(x, y)`` pair (inputs, targets);
      :meth:`apply_X` and :meth:`apply_Y` transform one side.
    - ``indexed``: ``ds[i]`` reads element ``i`` directly and ``len(ds)`` is
      known. Datasets made from iterables (generators, ``IterableDataset``,
      ``tf.data``) are not indexed; iterate them instead.

    An element is an array or tensor, or a tuple, list or dict of them (nested
    as deep as needed).
    """

    #: the library the elements are held in: "numpy", "torch" or "tf"
    backend: ClassVar[str] = "numpy"
    _node: Node

    def __init__(self) -> None:
        raise TypeError(
            "Dataset is the interface of forgeml's datasets and is not built directly. "
            "Use NumpyDataset(...), TorchDataset(...) or TFDataset(...)."
        )

    @classmethod
    def _wrap(cls, node: Node) -> Self:
        obj = object.__new__(cls._class_for(node))
        obj._node = node
        return obj

    @classmethod
    def _class_for(cls, node: Node) -> type[Self]:
        return cls

    def _derive(self, node: Node) -> Self:
        return type(self)._wrap(node)

    # -- flags and size -----------------------------------------------------------------------

    @property
    def batched(self) -> bool:
        """True when every element is a batch (arrays with a leading batch dimension)."""
        return self._node.batched

    @property
    def supervised(self) -> bool:
        """True when every element is an ``(x, y)`` pair."""
        return self._node.supervised

    @property
    def indexed(self) -> bool:
        """True when ``ds[i]`` reads element ``i`` directly (and ``len(ds)`` is known)."""
        return self._node.indexed

    def __len__(self) -> int:
        """The number of elements (batches when batched); TypeError when it is unknown."""
        size = self._node.length()
        if size is None:
            raise TypeError(
                f"The length of this {self._name()} is unknown: it reads an iterable (a "
                f"generator, an IterableDataset, a tf.data.Dataset of unknown cardinality) or "
                f"comes from a step whose output size depends on the data. Iterate it instead, "
                f"pass size= when you build it, or collect() it."
            )
        return size

    def __bool__(self) -> bool:
        return True  # a dataset is a dataset, even when its length is unknown

    def __iter__(self) -> Iterator[Any]:
        return iter(self._node)

    def __getitem__(self, index: int | slice) -> Any:
        """Element ``index`` of an indexed dataset; a slice gives a dataset of those elements."""
        if not self._node.indexed:
            raise TypeError(
                f"This {self._name()} is not indexed: it reads an iterable, so its elements "
                f"can only be iterated. Iterate it (for x in ds, ds.skip(i).peek()), or "
                f"collect() it to index it."
            )
        size = len(self)
        if isinstance(index, slice):
            positions = range(size)[index]
            return self._derive(Pick(self._node, Fixed(positions)))
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(
                f"Dataset indices must be integers or slices. Got {index!r} "
                f"({type(index).__name__})."
            )
        position = int(index) + size if index < 0 else int(index)
        if not 0 <= position < size:
            raise IndexError(f"Index {index} is out of range for a dataset of {size} elements.")
        return self._node.get(position)

    def peek(self) -> Any:
        """The first element (the first batch when batched), computed without keeping it."""
        if self._node.indexed:
            if self._node.length() == 0:
                raise DataError(f"Cannot peek at an empty {self._name()}: it has no elements.")
            return self._node.get(0)
        for element in self._node:
            return element
        raise DataError(f"Cannot peek at an empty {self._name()}: it has no elements.")

    # -- transformations ------------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any], *, supervised: bool | None = None) -> Self:
        """``fn(element)`` for every element: every batch when batched.

        ``supervised`` declares whether ``fn`` returns ``(x, y)`` pairs (default:
        the same as this dataset). Use :meth:`map_el` to work on single samples.
        """
        _check_callable(fn, "map")
        return self._derive(Map(self._node, fn, supervised=supervised))

    def map_el(self, fn: Callable[[Any], Any]) -> Self:
        """``fn(sample)`` for every sample, inside batches when batched (sizes are kept).

        Each batch is split into samples, ``fn`` runs on each, and the results
        are stacked again; on unbatched data it is :meth:`map`.
        """
        _check_callable(fn, "map_el")
        return self._derive(MapEl(self._node, fn, self.backend))

    def apply_X(self, fn: Callable[[Any], Any]) -> Self:
        """``(fn(x), y)`` for every ``(x, y)`` element of a supervised dataset (whole batches)."""
        _check_callable(fn, "apply_X")
        self._need_supervised("apply_X")
        return self._derive(Map(self._node, _ApplySide(fn, 0), supervised=True))

    def apply_Y(self, fn: Callable[[Any], Any]) -> Self:
        """``(x, fn(y))`` for every ``(x, y)`` element of a supervised dataset (whole batches)."""
        _check_callable(fn, "apply_Y")
        self._need_supervised("apply_Y")
        return self._derive(Map(self._node, _ApplySide(fn, 1), supervised=True))

    def batch(self, size: int, *, drop_remainder: bool = False) -> Self:
        """Samples grouped ``size`` at a time into batches (arrays stacked on a new first axis).

        The last batch holds what is left unless ``drop_remainder``. A batched
        dataset is unbatched first, so this also changes the batch size.
        """
        size = _positive_int(size, "batch", "size")
        node = self._node if not self._node.batched else Unbatch(self._node)
        return self._derive(Batch(node, size, drop_remainder=drop_remainder, backend=self.backend))

    def unbatch(self) -> Self:
        """The samples of every batch, one element each; an unbatched dataset is returned as is.

        Stays indexed when the batch sizes are known without computing (after
        :meth:`batch`, :meth:`map_el`, conversions, :meth:`take`/:meth:`skip`,
        and for arrays); after :meth:`map` it is iterated.
        """
        if not self._node.batched:
            return self
        return self._derive(Unbatch(self._node))

    def take(self, count: int) -> Self:
        """The first ``count`` elements (batches when batched)."""
        count = _non_negative_int(count, "take", "count")
        if self._node.indexed:
            return self._derive(Pick(self._node, Window(0, count)))
        return self._derive(Take(self._node, count))

    def skip(self, count: int) -> Self:
        """Every element after the first ``count`` (batches when batched)."""
        count = _non_negative_int(count, "skip", "count")
        if self._node.indexed:
            return self._derive(Pick(self._node, Window(count, None)))
        return self._derive(Skip(self._node, count))

    def shuffle(self, seed: int | None = None, buffer_size: int | None = None) -> Self:
        """The samples in a random order, the same order on every pass.

        With ``buffer_size=None`` an indexed dataset is shuffled completely (a
        permutation, and it stays indexed); an iterable one needs a
        ``buffer_size``: samples pass through a buffer that size and come out
        in random order, as in ``tf.data``. Batched data is shuffled sample by
        sample and batched again with the size of its first batch; when its
        batch sizes are unknown (after :meth:`map`) every pass reads all its
        samples into memory. ``seed`` fixes the order (None: a random one,
        drawn now). For a new order each epoch, shuffle with ``seed=epoch``.
        """
        if seed is None:
            seed = int(cast(int, np.random.SeedSequence().entropy) % (2**63))
        elif isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise DataError(f"shuffle()'s seed must be an integer or None. Got {seed!r}.")
        seed = int(seed)
        node = self._node
        if buffer_size is not None:
            buffer_size = _positive_int(buffer_size, "shuffle", "buffer_size")
            return self._derive(BufferShuffle(node, buffer_size, seed, self.backend))
        if not node.indexed:
            raise DataError(
                f"shuffle() needs a buffer_size for this {self._name()}: it is not indexed, so "
                f"it cannot be permuted without reading it all. Pass buffer_size=N (N samples "
                f"are held in memory; larger shuffles better), or collect() it first for a "
                f"full shuffle."
            )

        permutation = Permutation(seed)
        if not node.batched:
            return self._derive(Pick(node, permutation))
        sizes = node.batch_sizes()
        if sizes is None:  # indexed, but the samples per batch are unknown: read them all
            return self._derive(BufferShuffle(node, None, seed, self.backend))
        if not sizes:
            return self
        samples = Pick(Unbatch(node), permutation)
        return self._derive(Batch(samples, sizes[0], drop_remainder=False, backend=self.backend))

    def collect(self) -> Self:
        """Every element computed once and kept in memory, in this dataset's backend.

        The result is indexed; iterating it again computes nothing.
        """
        elements = [convert(element, self.backend) for element in self._node]
        node = SequenceSource(
            elements, batched=self._node.batched, supervised=self._node.supervised
        )
        return self._derive(node)

    # -- conversions -------------------------------------------------------------------------

    def numpy(self) -> NumpyDataset:
        """The same elements as numpy arrays (values and dtypes kept)."""
        return NumpyDataset._wrap(_converted(self._node, "numpy"))

    def torch(self) -> TorchDataset:
        """The same elements as torch tensors (values and dtypes kept).

        The result is a ``torch.utils.data`` dataset: pass it to a
        ``DataLoader`` (map-style when indexed, an ``IterableDataset`` otherwise).
        """
        adapter("torch")  # says how to install torch when it is missing
        return TorchDataset._wrap(_converted(self._node, "torch"))

    def tf(self) -> TFDataset:
        """The same elements as TensorFlow tensors (values and dtypes kept)."""
        adapter("tf")
        return TFDataset._wrap(_converted(self._node, "tf"))

    # -- helpers -------------------------------------------------------------------------------

    def _name(self) -> str:
        public = next(c for c in type(self).__mro__ if not c.__name__.startswith("_"))
        return public.__name__

    def _need_supervised(self, method: str) -> None:
        if not self._node.supervised:
            raise DataError(
                f"{method}() needs a supervised dataset, whose elements are (x, y) pairs; this "
                f"{self._name()} has supervised=False. Build it with supervised=True, or map "
                f"its elements to pairs with .map(fn, supervised=True)."
            )

    def __repr__(self) -> str:
        size = self._node.length()
        return (
            f"{self._name()}(batched={self.batched}, supervised={self.supervised}, "
            f"indexed={self.indexed}, len={'unknown' if size is None else size})"
        )


class NumpyDataset(Dataset):
    """A dataset of numpy arrays.

    ``data`` is one of:

    - an array, or a tuple or dict of arrays (nested as deep as needed) sharing
      their first dimension: by default (``batched=True``) **one batch**, as in
      DRYML: ``peek()`` returns the arrays themselves and ``unbatch()`` yields
      their rows. With ``batched=False`` the rows are the elements.
    - a list of elements (``batched=False`` by default: samples).
    - a callable that returns a new iterable of elements (e.g. a generator
      function) on every call; the dataset is iterable, not indexed, and its
      length is ``size`` (unknown when None).

    ``supervised=True`` declares ``(x, y)`` elements: ``NumpyDataset((x, y),
    supervised=True)``.
    """

    backend: ClassVar[str] = "numpy"

    def __init__(
        self,
        data: Any,
        *,
        supervised: bool = False,
        batched: bool | None = None,
        size: int | None = None,
    ) -> None:
        node = _source(data, "numpy", type(self).__name__, supervised, batched, size)
        self._node = _converted(node, "numpy") if isinstance(data, Dataset) else node


class TorchDataset(Dataset):
    """A dataset of torch tensors, which is also a ``torch.utils.data`` dataset.

    ``source`` is a torch map-style ``Dataset`` (indexed), an
    ``IterableDataset`` or a ``DataLoader`` (iterated; a DataLoader that
    batches gives batched elements), or anything :class:`NumpyDataset`
    accepts (tensors or arrays, lists, callables). Leaves that are numbers or
    arrays become tensors.

    Pass it to ``torch.utils.data.DataLoader``: an indexed one is a map-style
    dataset (``ds[i]``, ``len(ds)``, so the loader can shuffle and split it
    among workers); one that is not is an ``IterableDataset``, split among
    workers element by element.
    """

    backend: ClassVar[str] = "torch"

    def __init__(
        self,
        source: Any,
        *,
        supervised: bool = False,
        batched: bool | None = None,
        size: int | None = None,
    ) -> None:
        torch_adapter = adapter("torch")
        kind = None if isinstance(source, Dataset) else torch_adapter.data_dataset_kind(source)
        node: Node
        if kind == "map":
            node = SequenceSource(source, batched=bool(batched), supervised=supervised)
        elif kind in ("iterable", "loader"):
            if batched is None:
                batched = kind == "loader" and bool(torch_adapter.data_loader_batched(source))
            if size is None and kind == "loader":
                size = _length_or_none(source)
            node = IterSource(
                functools.partial(iter, source),
                batched=batched,
                supervised=supervised,
                size=size,
                what=type(source).__name__,
            )
        else:
            node = _source(source, "torch", type(self).__name__, supervised, batched, size)
        self._node = Convert(node, "torch")
        self.__class__ = type(self)._class_for(self._node)

    @classmethod
    def _class_for(cls, node: Node) -> type[Self]:
        if node.indexed:
            return cast("type[Self]", TorchDataset)
        if not _registered:
            adapter("torch").data_register_iterable(_IterableTorchDataset)
            _registered.append(True)
        return cast("type[Self]", _IterableTorchDataset)

    def __iter__(self) -> Iterator[Any]:
        elements = iter(self._node)
        worker = adapter("torch").data_worker_info()
        if worker is None:
            return elements
        worker_id, workers = worker  # inside a DataLoader worker: every workers-th element
        return itertools.islice(elements, worker_id, None, workers)


class _IterableTorchDataset(TorchDataset):
    """A TorchDataset that is not indexed: registered as a torch ``IterableDataset``."""


# Whether _IterableTorchDataset is registered with torch as an IterableDataset (once).
_registered: list[bool] = []


class TFDataset(Dataset):
    """A dataset of TensorFlow tensors.

    ``source`` is a ``tf.data.Dataset`` (iterated; its length is its
    cardinality when known), or anything :class:`NumpyDataset` accepts. A
    ``tf.data.Dataset`` does not say whether it is batched: pass
    ``batched=True`` for one made with ``.batch()``. :meth:`as_tf_dataset`
    gives a ``tf.data.Dataset`` for Keras.
    """

    backend: ClassVar[str] = "tf"

    def __init__(
        self,
        source: Any,
        *,
        supervised: bool = False,
        batched: bool | None = None,
        size: int | None = None,
    ) -> None:
        tf_adapter = adapter("tf")
        if tf_adapter.data_is_dataset(source):
            if size is None:
                size = tf_adapter.data_cardinality(source)
            self._node = TFSource(source, batched=bool(batched), supervised=supervised, size=size)
        else:
            node = _source(source, "tf", type(self).__name__, supervised, batched, size)
            self._node = Convert(node, "tf")

    def as_tf_dataset(self) -> Any:
        """A ``tf.data.Dataset`` of these elements (the wrapped one when nothing was chained).

        Otherwise it is built with ``from_generator``; the first element is
        computed to learn the dtypes and shapes, which every element must share
        (except the batch dimension).
        """
        node = self._node
        if isinstance(node, TFSource):
            return node.dataset
        example = _tuples(convert(self.peek(), "numpy"))

        def elements() -> Iterator[Any]:
            for element in node:
                yield _tuples(convert(element, "numpy"))

        return adapter("tf").data_from_generator(elements, example, node.batched)


# --- building sources ----------------------------------------------------------------------


def _source(
    data: Any,
    backend: str,
    cls: str,
    supervised: bool,
    batched: bool | None,
    size: int | None,
) -> Node:
    """The source node for ``data``: arrays (one batch), a list of elements, or a callable."""
    if isinstance(data, Dataset):
        if batched is not None or size is not None:
            raise DataError(
                f"{cls}(dataset) keeps the dataset's flags and size; do not pass batched= or "
                f"size= with it."
            )
        inner = data._node
        if supervised and not inner.supervised:
            return Map(inner, _identity, supervised=True)
        return inner
    if size is not None:
        size = _non_negative_int(size, cls, "size")
    if isinstance(data, list):
        if size is not None and size != len(data):
            raise DataError(f"{cls}: size={size} but the list has {len(data)} elements.")
        return SequenceSource(data, batched=bool(batched), supervised=supervised)
    if inspect.isgenerator(data) or (isinstance(data, Iterator) and not callable(data)):
        raise TypeError(
            f"{cls} cannot use {type(data).__name__} objects: an iterator or generator can be "
            f"read only once, but a dataset is read on every pass. Pass the function that "
            f"makes it instead, e.g. {cls}(lambda: my_generator())."
        )
    if callable(data) and not _is_array_tree(data):
        return IterSource(data, batched=bool(batched), supervised=supervised, size=size)
    if _is_array_tree(data):
        if size is not None:
            raise DataError(
                f"{cls}: size= is for callables; the size of arrays is their first dimension."
            )
        if supervised and not (isinstance(data, tuple | list) and len(data) == 2):
            raise DataError(
                f"{cls}(data, supervised=True) needs data=(x, y): a pair of arrays (or of "
                f"tuples/dicts of arrays). Got a {type(data).__name__}"
                f"{f' of {len(data)} items' if isinstance(data, tuple | dict) else ''}."
            )
        tree = tree_map(lambda leaf: _array_leaf(leaf, backend, cls), data)
        node: Node = ArraySource(tree, supervised=supervised)
        return node if batched is None or batched else Unbatch(node)
    raise TypeError(
        f"{cls} cannot make a dataset from {type(data).__module__}.{type(data).__qualname__}. "
        f"Pass an array (or a tuple or dict of arrays), a list of elements, or a callable that "
        f"returns an iterable of elements."
    )


def _is_array_tree(data: Any) -> bool:
    if is_container(data) and not isinstance(data, list):
        leaves = tree_leaves(data)
        return bool(leaves) and all(leaf_backend(leaf) is not None for leaf in leaves)
    return leaf_backend(data) is not None and not isinstance(data, bool | int | float | complex)


def _array_leaf(leaf: Any, backend: str, cls: str) -> Any:
    leaf = convert_leaf(leaf, backend)
    shape = getattr(leaf, "shape", ())
    if len(shape) == 0:
        raise DataError(
            f"{cls} of arrays needs every array to have a first (sample) dimension; got a "
            f"scalar {leaf!r}. Wrap scalars in a list of elements instead."
        )
    return leaf


def _identity(element: Any) -> Any:
    return element


class _ApplySide:
    """``fn`` on one side of ``(x, y)`` pairs: 0 for x (apply_X), 1 for y (apply_Y)."""

    def __init__(self, fn: Callable[[Any], Any], side: int) -> None:
        self.fn = fn
        self.side = side

    def __call__(self, element: Any) -> tuple[Any, Any]:
        x, y = check_pair(element, "apply_X" if self.side == 0 else "apply_Y")
        return (self.fn(x), y) if self.side == 0 else (x, self.fn(y))


def _converted(node: Node, backend: str) -> Node:
    if isinstance(node, Convert) and node.backend == backend:
        return node
    return Convert(node, backend)


def _tuples(tree: Any) -> Any:
    """Lists as tuples (tf.data reads lists as tensors, tuples as structure)."""
    if isinstance(tree, dict):
        return {key: _tuples(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple) and not hasattr(tree, "_fields"):
        return tuple(_tuples(value) for value in tree)
    return tree


def _length_or_none(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _check_callable(fn: object, method: str) -> None:
    if not callable(fn):
        raise DataError(
            f"{method}() takes a function of one element. Got {fn!r} ({type(fn).__name__})."
        )


def _positive_int(value: object, method: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{method}()'s {name} must be a positive integer. Got {value!r}.")
    return int(value)


def _non_negative_int(value: object, method: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise DataError(f"{method}()'s {name} must be a non-negative integer. Got {value!r}.")
    return int(value)
