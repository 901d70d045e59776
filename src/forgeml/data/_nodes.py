"""The lazy pipeline behind a dataset: sources and the transformations chained on them.

A node describes its elements (``batched``, ``supervised``) and how they can
be read: every node can be iterated again from the start; an ``indexed`` node
also reads element ``i`` directly (:meth:`Node.get`) and knows its length.
Nothing is computed until a node is iterated or indexed.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from forgeml._core._errors import DataError
from forgeml.data._backend import batch_len, convert, sample_of, stack, unstack
from forgeml.data._tree import describe


class Node:
    """One stage of a pipeline. Subclasses set the flags and override what they support."""

    batched: bool = False
    supervised: bool = False
    #: True when :meth:`get` reads any element directly and :meth:`length` is known
    indexed: bool = False

    def __iter__(self) -> Iterator[Any]:
        size = self.length()
        assert size is not None, "only indexed nodes iterate by position"
        for index in range(size):
            yield self.get(index)

    def length(self) -> int | None:
        """The number of elements (batches when batched), or None when unknown."""
        return None

    def get(self, index: int) -> Any:
        """Element ``index`` (``0 <= index < length()``); indexed nodes only."""
        raise TypeError(f"{type(self).__name__} is not indexed")

    def batch_sizes(self) -> Sequence[int] | None:
        """The size of every batch of an indexed batched node, when known without computing."""
        return None

    def get_sample(self, batch: int, offset: int) -> Any:
        """Sample ``offset`` of batch ``batch``; nodes that can, read it without the whole batch."""
        return sample_of(self.get(batch), offset)


# --- sources -----------------------------------------------------------------------------


class ArraySource(Node):
    """One batch: arrays or tensors (possibly nested) that share their first dimension."""

    indexed = True
    batched = True

    def __init__(self, tree: Any, *, supervised: bool) -> None:
        self.tree = tree
        self.supervised = supervised
        self._size = batch_len(tree)

    def __iter__(self) -> Iterator[Any]:
        yield self.tree

    def length(self) -> int:
        return 1

    def get(self, index: int) -> Any:
        return self.tree

    def batch_sizes(self) -> list[int]:
        return [self._size]

    def get_sample(self, batch: int, offset: int) -> Any:
        return sample_of(self.tree, offset)


class SequenceSource(Node):
    """Elements read by position from a sequence (a list, a torch map-style dataset, ...)."""

    indexed = True

    def __init__(self, items: Any, *, batched: bool, supervised: bool) -> None:
        self.items = items
        self.batched = batched
        self.supervised = supervised
        self._sizes: list[int] | None = None

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.items, list | tuple):
            return iter(self.items)
        return super().__iter__()

    def length(self) -> int:
        return len(self.items)

    def get(self, index: int) -> Any:
        return self.items[index]

    def batch_sizes(self) -> list[int] | None:
        # Only for elements already in memory: reading a map-style dataset would compute them.
        if not (self.batched and isinstance(self.items, list | tuple)):
            return None
        if self._sizes is None:
            self._sizes = [batch_len(item) for item in self.items]
        return self._sizes


class IterSource(Node):
    """Elements from an iterable made afresh by ``factory()`` for every pass."""

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        batched: bool,
        supervised: bool,
        size: int | None = None,
        what: str = "the callable",
    ) -> None:
        self.factory = factory
        self.batched = batched
        self.supervised = supervised
        self.size = size
        self.what = what

    def __iter__(self) -> Iterator[Any]:
        made = self.factory()
        try:
            return iter(made)
        except TypeError:
            raise DataError(
                f"{self.what} must return an iterable of elements (e.g. a generator) each time "
                f"it is called. It returned {type(made).__name__}."
            ) from None

    def length(self) -> int | None:
        return self.size


class TFSource(IterSource):
    """The elements of a ``tf.data.Dataset`` (kept, so it can be handed back to TensorFlow)."""

    def __init__(self, dataset: Any, *, batched: bool, supervised: bool, size: int | None) -> None:
        super().__init__(
            lambda: iter(dataset),
            batched=batched,
            supervised=supervised,
            size=size,
            what="tf.data.Dataset",
        )
        self.dataset = dataset


# --- transformations ---------------------------------------------------------------------


class _Derived(Node):
    """A node over ``src`` with its flags unless told otherwise."""

    def __init__(self, src: Node) -> None:
        self.src = src
        self.batched = src.batched
        self.supervised = src.supervised
        self.indexed = src.indexed

    def length(self) -> int | None:
        return self.src.length()


class Map(_Derived):
    """``fn(element)`` for every element (every batch when batched)."""

    def __init__(self, src: Node, fn: Callable[[Any], Any], *, supervised: bool | None) -> None:
        super().__init__(src)
        self.fn = fn
        if supervised is not None:
            self.supervised = supervised

    def __iter__(self) -> Iterator[Any]:
        fn = self.fn
        for element in self.src:
            yield fn(element)

    def get(self, index: int) -> Any:
        return self.fn(self.src.get(index))


class MapEl(_Derived):
    """``fn(sample)`` for every sample, inside batches when batched (batch sizes are kept)."""

    def __init__(self, src: Node, fn: Callable[[Any], Any], backend: str) -> None:
        super().__init__(src)
        self.fn = fn
        self.backend = backend

    def _apply(self, element: Any) -> Any:
        if not self.batched:
            return self.fn(element)
        return stack([self.fn(sample) for sample in unstack(element)], self.backend)

    def __iter__(self) -> Iterator[Any]:
        for element in self.src:
            yield self._apply(element)

    def get(self, index: int) -> Any:
        return self._apply(self.src.get(index))

    def batch_sizes(self) -> Sequence[int] | None:
        return self.src.batch_sizes()

    def get_sample(self, batch: int, offset: int) -> Any:
        return self.fn(self.src.get_sample(batch, offset))


class Convert(_Derived):
    """Every leaf in ``backend`` (numpy arrays, torch tensors or TensorFlow tensors)."""

    def __init__(self, src: Node, backend: str) -> None:
        super().__init__(src)
        self.backend = backend

    def __iter__(self) -> Iterator[Any]:
        for element in self.src:
            yield convert(element, self.backend)

    def get(self, index: int) -> Any:
        return convert(self.src.get(index), self.backend)

    def batch_sizes(self) -> Sequence[int] | None:
        return self.src.batch_sizes()

    def get_sample(self, batch: int, offset: int) -> Any:
        return convert(self.src.get_sample(batch, offset), self.backend)


class Batch(_Derived):
    """Samples grouped ``size`` at a time into stacked batches; the last may be smaller."""

    def __init__(self, src: Node, size: int, *, drop_remainder: bool, backend: str) -> None:
        super().__init__(src)
        self.batched = True
        self.size = size
        self.drop_remainder = drop_remainder
        self.backend = backend

    def length(self) -> int | None:
        total = self.src.length()
        if total is None:
            return None
        full, rest = divmod(total, self.size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.src)
        while chunk := list(itertools.islice(it, self.size)):
            if len(chunk) < self.size and self.drop_remainder:
                return
            yield stack(chunk, self.backend)

    def get(self, index: int) -> Any:
        total = self.src.length()
        assert total is not None
        start = index * self.size
        stop = min(start + self.size, total)
        return stack([self.src.get(i) for i in range(start, stop)], self.backend)

    def batch_sizes(self) -> list[int] | None:
        total = self.src.length()
        if not self.indexed or total is None:
            return None
        full, rest = divmod(total, self.size)
        return [self.size] * full + ([rest] if rest and not self.drop_remainder else [])

    def get_sample(self, batch: int, offset: int) -> Any:
        return self.src.get(batch * self.size + offset)


class Unbatch(_Derived):
    """The samples of every batch, one element each.

    Indexed when ``src`` is indexed and knows its batch sizes without computing
    them; sample ``i`` is then read from its batch with ``get_sample``.
    """

    def __init__(self, src: Node) -> None:
        super().__init__(src)
        self.batched = False
        sizes = src.batch_sizes() if src.indexed else None
        self.indexed = sizes is not None
        self._starts: list[int] = list(itertools.accumulate(sizes or [], initial=0))

    def length(self) -> int | None:
        return self._starts[-1] if self.indexed else None

    def __iter__(self) -> Iterator[Any]:
        for batch in self.src:
            yield from unstack(batch)

    def get(self, index: int) -> Any:
        batch = bisect.bisect_right(self._starts, index) - 1
        return self.src.get_sample(batch, index - self._starts[batch])


#: Positions picked from an indexed node: a range, a list or a numpy array of ints.
Positions = Sequence[int] | np.ndarray


# What Pick reads, as picklable functions of the source's length (DataLoader workers that
# spawn unpickle the dataset).


class Fixed:
    """The same positions whatever the length (already checked against it)."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions

    def __call__(self, size: int) -> Positions:
        return self.positions


class Window:
    """``count`` positions (None: all the rest) from ``start``, clipped to the length."""

    def __init__(self, start: int, count: int | None) -> None:
        self.start = start
        self.count = count

    def __call__(self, size: int) -> Positions:
        start = min(self.start, size)
        stop = size if self.count is None else min(start + self.count, size)
        return range(start, stop)


class Permutation:
    """A random order of the positions, drawn from ``seed``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, size: int) -> Positions:
        return np.random.default_rng(self.seed).permutation(size)


class Pick(_Derived):
    """The elements of an indexed ``src`` at chosen positions (a slice or a permutation).

    ``positions(length)`` gives the positions; it runs once, when first needed.
    """

    def __init__(self, src: Node, positions: Callable[[int], Positions]) -> None:
        super().__init__(src)
        assert src.indexed
        self._make = positions
        self._positions: Positions | None = None

    @property
    def positions(self) -> Positions:
        if self._positions is None:
            total = self.src.length()
            assert total is not None
            self._positions = self._make(total)
        return self._positions

    def length(self) -> int:
        return len(self.positions)

    def get(self, index: int) -> Any:
        return self.src.get(int(self.positions[index]))

    def batch_sizes(self) -> list[int] | None:
        sizes = self.src.batch_sizes()
        return None if sizes is None else [sizes[int(i)] for i in self.positions]

    def get_sample(self, batch: int, offset: int) -> Any:
        return self.src.get_sample(int(self.positions[batch]), offset)


class Take(_Derived):
    """The first ``count`` elements of an iterable ``src``."""

    def __init__(self, src: Node, count: int) -> None:
        super().__init__(src)
        self.count = count

    def length(self) -> int | None:
        total = self.src.length()
        return None if total is None else min(total, self.count)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.src, self.count)


class Skip(_Derived):
    """The elements of an iterable ``src`` after the first ``count``."""

    def __init__(self, src: Node, count: int) -> None:
        super().__init__(src)
        self.count = count

    def length(self) -> int | None:
        total = self.src.length()
        return None if total is None else max(total - self.count, 0)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.src, self.count, None)


class BufferShuffle(_Derived):
    """Samples shuffled through a buffer of ``buffer_size`` (None: the whole dataset).

    Every pass draws from a generator seeded with ``seed``, so each pass has the
    same order. Batched data is shuffled sample by sample and batched again with
    the size of its first batch.
    """

    def __init__(self, src: Node, buffer_size: int | None, seed: int, backend: str) -> None:
        super().__init__(src)
        self.indexed = False
        self.buffer_size = buffer_size
        self.seed = seed
        self.backend = backend

    def length(self) -> int | None:
        return None if self.batched else self.src.length()

    def _shuffled(self, samples: Iterator[Any]) -> Iterator[Any]:
        rng = np.random.default_rng(self.seed)
        buffer: list[Any] = []
        limit = self.buffer_size
        for sample in samples:
            if limit is None or len(buffer) < limit:
                buffer.append(sample)
                continue
            index = int(rng.integers(limit))
            yield buffer[index]
            buffer[index] = sample
        for index in rng.permutation(len(buffer)):
            yield buffer[int(index)]

    def __iter__(self) -> Iterator[Any]:
        if not self.batched:
            yield from self._shuffled(iter(self.src))
            return
        first_size: list[int] = []

        def samples() -> Iterator[Any]:
            for batch in self.src:
                if not first_size:
                    first_size.append(batch_len(batch))
                yield from unstack(batch)

        shuffled = self._shuffled(samples())
        first = next(shuffled, _END)
        if first is _END:
            return
        size = first_size[0]  # read with the first batch, before its first sample came out
        chunk = [first, *itertools.islice(shuffled, size - 1)]
        while chunk:
            yield stack(chunk, self.backend)
            chunk = list(itertools.islice(shuffled, size))


_END = object()


def check_pair(element: Any, method: str) -> tuple[Any, Any]:
    """``(x, y)`` of a supervised element; DataError when it is not a pair."""
    if isinstance(element, tuple | list) and len(element) == 2:
        return element[0], element[1]
    raise DataError(
        f"{method}() expects the elements of a supervised dataset to be (x, y) pairs. Got "
        f"{describe(element)}. HINT: map the elements to pairs, e.g. "
        f".map(lambda s: (s['image'], s['label']), supervised=True)."
    )
