"""Tree transforms: steps applied to chosen leaves of nested samples, with shared randomness."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from forgeml._core._errors import DataError
from forgeml.data._backend import Ops, adapter, leaf_backend, ops_for, worker_id
from forgeml.data._tree import (
    Parts,
    format_path,
    get_path,
    resolve,
    set_path,
    tree_items,
)

#: A leaf's path: a dict key or position, or parts joined by "/" ("inputs/image", "0/mask").
Key = str | int
#: How a step reads image axes: "HWC" (channels last), "CHW" (channels first), or "auto":
#: numpy arrays are HWC and torch tensors CHW (as torchvision has them). 2-D leaves are HW.
Layout = Literal["auto", "HWC", "CHW"]
_LAYOUTS = ("auto", "HWC", "CHW")


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise DataError(
        f"rng must be a numpy Generator, an integer seed or None. Got {rng!r} "
        f"({type(rng).__name__})."
    )


def _keys(keys: Key | Sequence[Key] | None, step: str) -> tuple[Key, ...] | None:
    if keys is None:
        return None
    if isinstance(keys, str | int):
        return (keys,)
    keys = tuple(keys)
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise DataError(
                f"{step}'s keys are paths of leaves: str ('image', 'inputs/image') or int (a "
                f"position). Got {key!r} in keys={keys!r}."
            )
    if not keys:
        raise DataError(f"{step}(keys=()) selects no leaves. Pass keys=None for every leaf.")
    return keys


def _pair(size: int | Sequence[int], step: str, name: str = "size") -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in pair
    ):
        raise DataError(
            f"{step}'s {name} must be a positive integer or a (height, width) pair of them. "
            f"Got {size!r}."
        )
    return int(pair[0]), int(pair[1])


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, np.ndarray) or leaf_backend(leaf) == "torch"


class Step:
    """One step of a :class:`ComposeTree`: a change to chosen leaves of a sample.

    ``keys`` names the leaves a step applies to (paths: ``"image"``,
    ``("image", "mask")``, ``"inputs/image"``, ``0``); ``None`` means every
    array leaf the step accepts (images: arrays with two or more dimensions).
    A random step draws its parameters once per sample, in :meth:`draw`, from
    the leaves it will change, and :meth:`apply` changes each leaf with the
    same parameters: an image and its mask get the same crop.

    Subclass it for new steps: override :meth:`apply`, and :meth:`draw` when
    the step is random.
    """

    #: the fewest dimensions of a leaf selected by ``keys=None``
    min_ndim: int = 0

    def __init__(self, keys: Key | Sequence[Key] | None = None) -> None:
        self.keys = _keys(keys, type(self).__name__)

    def accepts(self, leaf: Any) -> bool:
        """Whether ``keys=None`` selects ``leaf``: numpy arrays and torch tensors."""
        return _is_array(leaf) and len(leaf.shape) >= self.min_ndim

    def draw(self, leaves: Sequence[tuple[str, Any]], rng: np.random.Generator) -> Any:
        """The random parameters for one sample, from its ``(path, leaf)`` pairs; None if none."""
        return None

    def apply(self, leaf: Any, params: Any) -> Any:
        """``leaf`` changed with ``params`` (what :meth:`draw` returned)."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(leaf, params)")

    def paths(self, sample: Any) -> list[Parts]:
        """The paths of the leaves of ``sample`` this step applies to."""
        if self.keys is None:
            return [parts for parts, leaf in tree_items(sample) if self.accepts(leaf)]
        found = [resolve(sample, key) for key in self.keys]
        if len(set(found)) < len(found):
            raise DataError(f"{type(self).__name__}'s keys={self.keys!r} name a leaf twice.")
        return found

    def __call__(self, sample: Any, rng: np.random.Generator | int | None = None) -> Any:
        paths = self.paths(sample)
        if not paths:
            return sample
        leaves = [(format_path(parts), get_path(sample, parts)) for parts in paths]
        params = self.draw(leaves, _generator(rng))
        for parts, (where, leaf) in zip(paths, leaves, strict=True):
            try:
                sample = set_path(sample, parts, self.apply(leaf, params))
            except DataError as exc:
                raise DataError(f"{type(self).__name__} on '{where}': {exc}") from None
        return sample

    def _args(self) -> str:
        return "" if self.keys is None else f"keys={self.keys!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._args()})"


class ComposeTree:
    """Steps applied in order to nested samples (dicts, tuples, lists of arrays or tensors).

    Random steps draw their parameters from one numpy ``Generator``: seeded by
    ``seed`` (None: unseeded), or passed per call as ``rng=`` (a Generator or
    an int seed). Each random step draws once per sample, so every leaf it
    applies to (an image and its mask) gets the same parameters.

    A step is a :class:`Step` or any function of the sample. Use it with
    ``Dataset.map`` on samples, or ``Dataset.map_el`` inside batches. In a
    forked process, such as a torch DataLoader worker, it draws from a
    generator of its own (from ``seed`` and the worker id), so workers do not
    repeat each other's draws.
    """

    def __init__(
        self,
        steps: Sequence[Step | Callable[[Any], Any]],
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        steps = list(steps)
        for step in steps:
            if not callable(step):
                raise DataError(
                    f"ComposeTree's steps are Step objects or functions of a sample. Got "
                    f"{step!r} ({type(step).__name__})."
                )
        self.steps = steps
        self.rng = _generator(seed)
        # A forked process (a DataLoader worker) must not repeat its parent's draws: it
        # switches to a generator of its own, from this entropy and its worker id.
        self._entropy = int(_generator(seed).integers(2**63))
        self._pid = os.getpid()

    def _generator(self) -> np.random.Generator:
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            worker = worker_id()
            key = worker if worker is not None else pid
            self.rng = np.random.default_rng(
                np.random.SeedSequence(self._entropy, spawn_key=(key,))
            )
        return self.rng

    def __call__(self, sample: Any, *, rng: np.random.Generator | int | None = None) -> Any:
        generator = self._generator() if rng is None else _generator(rng)
        for step in self.steps:
            sample = step(sample, generator) if isinstance(step, Step) else step(sample)
        return sample

    def __repr__(self) -> str:
        return f"ComposeTree([{', '.join(map(repr, self.steps))}])"


class Select(Step):
    """Keep only some nodes of the sample.

    ``Select("image")`` gives the node itself, ``Select(("image", "label"))`` a
    tuple of nodes, ``Select({"x": "image", "y": "label"})`` a dict.
    """

    def __init__(self, keys: Key | Sequence[Key] | Mapping[str, Key]) -> None:
        self.mapping = dict(keys) if isinstance(keys, Mapping) else None
        self.single = isinstance(keys, str | int)
        if isinstance(keys, Mapping):
            super().__init__(tuple(keys.values()))
        else:
            super().__init__(keys)

    def __call__(self, sample: Any, rng: np.random.Generator | int | None = None) -> Any:
        assert self.keys is not None
        nodes = [get_path(sample, resolve(sample, key)) for key in self.keys]
        if self.mapping is not None:
            return dict(zip(self.mapping, nodes, strict=True))
        return nodes[0] if self.single else tuple(nodes)


class _Spatial(Step):
    min_ndim = 2

    def __init__(self, keys: Key | Sequence[Key] | None, layout: Layout) -> None:
        super().__init__(keys)
        if layout not in _LAYOUTS:
            raise DataError(
                f"{type(self).__name__}'s layout must be one of {', '.join(_LAYOUTS)}. "
                f"Got {layout!r}."
            )
        self.layout = layout

    def _layout(self, leaf: Any) -> str:
        if self.layout != "auto":
            return self.layout
        return "CHW" if leaf_backend(leaf) == "torch" else "HWC"

    def axes(self, leaf: Any) -> tuple[int, int]:
        """The (height, width) axes of ``leaf``."""
        ndim = len(leaf.shape)
        if ndim < 2:
            raise DataError(
                f"an image needs two or more dimensions (HW, HWC or CHW); got shape "
                f"{tuple(leaf.shape)}. Pick image leaves with keys=."
            )
        if ndim == 2:
            return 0, 1
        return (ndim - 3, ndim - 2) if self._layout(leaf) == "HWC" else (ndim - 2, ndim - 1)

    def channel_axis(self, leaf: Any) -> int | None:
        ndim = len(leaf.shape)
        if ndim < 3:
            return None
        return ndim - 1 if self._layout(leaf) == "HWC" else ndim - 3

    def image_size(self, leaves: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        """The (height, width) the leaves share; DataError when they differ."""
        sizes: dict[tuple[int, int], list[str]] = {}
        for where, leaf in leaves:
            if not _is_array(leaf):
                ops_for(leaf, type(self).__name__, where)  # raises, naming the leaf
            h, w = self.axes(leaf)
            sizes.setdefault((int(leaf.shape[h]), int(leaf.shape[w])), []).append(where)
        if len(sizes) > 1:
            listed = "; ".join(f"{', '.join(w)}: {h}x{wd}" for (h, wd), w in sizes.items())
            raise DataError(
                f"{type(self).__name__} draws one set of parameters per sample for all its "
                f"leaves, which must have the same height and width. Got {listed}. "
                f"HINT: Resize them first, or apply it to fewer leaves with keys=."
            )
        return next(iter(sizes))

    def _args(self) -> str:
        layout = "" if self.layout == "auto" else f"layout={self.layout!r}"
        return ", ".join(a for a in (super()._args(), layout) if a)


class RandomCrop(_Spatial):
    """A random ``size`` (int, or (height, width)) window, the same for every chosen leaf."""

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        keys: Key | Sequence[Key] | None = None,
        layout: Layout = "auto",
    ) -> None:
        super().__init__(keys, layout)
        self.size = _pair(size, "RandomCrop")

    def draw(self, leaves: Sequence[tuple[str, Any]], rng: np.random.Generator) -> Any:
        height, width = self.image_size(leaves)
        crop_h, crop_w = self.size
        if crop_h > height or crop_w > width:
            raise DataError(
                f"RandomCrop of {crop_h}x{crop_w} does not fit images of {height}x{width} "
                f"({', '.join(w for w, _ in leaves)}). Use a smaller size, or Resize first."
            )
        return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))

    def apply(self, leaf: Any, params: Any) -> Any:
        top, left = params
        h_axis, w_axis = self.axes(leaf)
        index = [slice(None)] * len(leaf.shape)
        index[h_axis] = slice(top, top + self.size[0])
        index[w_axis] = slice(left, left + self.size[1])
        return leaf[tuple(index)]

    def _args(self) -> str:
        return ", ".join(a for a in (repr(self.size), super()._args()) if a)


class RandomFlip(_Spatial):
    """Mirror left-right (``horizontal``) and/or upside down (``vertical``), each with ``p``."""

    def __init__(
        self,
        *,
        horizontal: bool = True,
        vertical: bool = False,
        p: float = 0.5,
        keys: Key | Sequence[Key] | None = None,
        layout: Layout = "auto",
    ) -> None:
        super().__init__(keys, layout)
        if not 0.0 <= float(p) <= 1.0:
            raise DataError(f"RandomFlip's p must be a probability in [0, 1]. Got {p!r}.")
        if not (horizontal or vertical):
            raise DataError("RandomFlip flips nothing: set horizontal=True and/or vertical=True.")
        self.horizontal = horizontal
        self.vertical = vertical
        self.p = float(p)

    def draw(self, leaves: Sequence[tuple[str, Any]], rng: np.random.Generator) -> Any:
        self.image_size(leaves)
        draws = rng.random(2) < self.p  # always two draws: the stream does not depend on flags
        return bool(draws[0]) and self.horizontal, bool(draws[1]) and self.vertical

    def apply(self, leaf: Any, params: Any) -> Any:
        flip_w, flip_h = params
        ops = ops_for(leaf, "RandomFlip")
        h_axis, w_axis = self.axes(leaf)
        if flip_w:
            leaf = ops.flip(leaf, w_axis)
        if flip_h:
            leaf = ops.flip(leaf, h_axis)
        return leaf


class Resize(_Spatial):
    """Images resized to ``size`` (int, or (height, width)).

    ``mode="bilinear"`` interpolates with pixel centres aligned (as
    ``torch.nn.functional.interpolate(..., align_corners=False)`` without
    antialiasing); integer images are rounded back to their dtype. Use
    ``mode="nearest"`` for masks and labels (the nearest pixel centre, as
    torch's ``"nearest-exact"``).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        mode: Literal["bilinear", "nearest"] = "bilinear",
        keys: Key | Sequence[Key] | None = None,
        layout: Layout = "auto",
    ) -> None:
        super().__init__(keys, layout)
        self.size = _pair(size, "Resize")
        if mode not in ("bilinear", "nearest"):
            raise DataError(f"Resize's mode must be 'bilinear' or 'nearest'. Got {mode!r}.")
        self.mode = mode

    def apply(self, leaf: Any, params: Any) -> Any:
        ops = ops_for(leaf, "Resize")
        h_axis, w_axis = self.axes(leaf)
        if self.mode == "nearest":
            for axis, out in ((h_axis, self.size[0]), (w_axis, self.size[1])):
                leaf = ops.take(leaf, _nearest(int(leaf.shape[axis]), out), axis)
            return leaf
        dtype = ops.dtype_name(leaf)
        floating = ops.is_floating(leaf)
        x = leaf if floating else ops.cast(leaf, "float32")
        for axis, out in ((h_axis, self.size[0]), (w_axis, self.size[1])):
            x = _bilinear(ops, x, axis, out)
        if floating:
            return x
        low, high = ops.int_range(leaf)
        return ops.cast(x.round().clip(low, high), dtype)

    def _args(self) -> str:
        mode = "" if self.mode == "bilinear" else f"mode={self.mode!r}"
        return ", ".join(a for a in (repr(self.size), mode, super()._args()) if a)


def _nearest(size: int, out: int) -> np.ndarray:
    index = np.floor((np.arange(out) + 0.5) * (size / out)).astype(np.int64)
    return np.asarray(np.minimum(index, size - 1), dtype=np.int64)


def _bilinear(ops: Ops, x: Any, axis: int, out: int) -> Any:
    size = int(x.shape[axis])
    if size == out:
        return x
    source = np.maximum((np.arange(out) + 0.5) * (size / out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    weight = (source - low).reshape((out,) + (1,) * (len(x.shape) - axis - 1))
    w = ops.constant(weight, like=x)
    a = ops.take(x, low, axis)
    b = ops.take(x, high, axis)
    return a + (b - a) * w


class Cast(Step):
    """Leaves converted to ``dtype`` ("float32", ``np.float32``, ``torch.float16``, ...)."""

    def __init__(self, dtype: Any, *, keys: Key | Sequence[Key] | None = None) -> None:
        super().__init__(keys)
        self.dtype = _dtype_name(dtype)

    def apply(self, leaf: Any, params: Any) -> Any:
        return ops_for(leaf, "Cast").cast(leaf, self.dtype)

    def _args(self) -> str:
        return ", ".join(a for a in (repr(self.dtype), super()._args()) if a)


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype.removeprefix("torch.").removeprefix("tf.")
    if type(dtype).__module__.partition(".")[0] == "torch":
        return str(dtype).removeprefix("torch.")
    try:
        return str(np.dtype(dtype).name)
    except TypeError:
        raise DataError(
            f"Cast needs a dtype: a name such as 'float32', a numpy dtype or a torch dtype. "
            f"Got {dtype!r}."
        ) from None


class Normalize(_Spatial):
    """``(x - mean) / std`` per channel (one value each for all channels, or one per channel).

    Integer images become float32 first; float images keep their dtype.
    """

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        *,
        keys: Key | Sequence[Key] | None = None,
        layout: Layout = "auto",
    ) -> None:
        super().__init__(keys, layout)
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise DataError(
                f"Normalize's mean and std are numbers or lists of numbers per "
                f"channel. Got mean={mean!r}, std={std!r}."
            )
        if not np.all(self.std > 0):
            raise DataError(f"Normalize's std must be positive (it divides). Got std={std!r}.")

    def apply(self, leaf: Any, params: Any) -> Any:
        ops = ops_for(leaf, "Normalize")
        x = leaf if ops.is_floating(leaf) else ops.cast(leaf, "float32")
        shape = [1] * len(x.shape)
        channels = max(len(self.mean), len(self.std))
        if channels > 1:
            axis = self.channel_axis(x)
            if axis is None or int(x.shape[axis]) != channels:
                raise DataError(
                    f"Normalize has {channels} values per channel but the image of shape "
                    f"{tuple(x.shape)} has "
                    f"{'no channel axis' if axis is None else f'{int(x.shape[axis])} channels'} "
                    f"(layout {self._layout(x)}). Pass one value per channel, or layout=."
                )
            shape[axis] = channels
        mean = ops.constant(np.broadcast_to(self.mean, (channels,)).reshape(shape), like=x)
        std = ops.constant(np.broadcast_to(self.std, (channels,)).reshape(shape), like=x)
        return (x - mean) / std

    def _args(self) -> str:
        values = f"mean={self.mean.tolist()}, std={self.std.tolist()}"
        return ", ".join(a for a in (values, super()._args()) if a)


class ToTensor(Step):
    """numpy images (HW or HWC) as torch tensors (CHW); uint8 becomes float32 in [0, 1].

    Like torchvision's ``ToTensor``: other dtypes keep their values and dtype.
    """

    min_ndim = 2

    def accepts(self, leaf: Any) -> bool:
        return isinstance(leaf, np.ndarray) and leaf.ndim >= 2

    def apply(self, leaf: Any, params: Any) -> Any:
        if not isinstance(leaf, np.ndarray):
            raise DataError(
                f"ToTensor converts numpy images (HW or HWC) to torch tensors; got a "
                f"{type(leaf).__module__}.{type(leaf).__qualname__}. Leave it out for leaves "
                f"that are tensors already (Cast('float32') changes the dtype)."
            )
        if leaf.ndim < 2:
            raise DataError(
                f"ToTensor needs an image (HW or HWC); got shape {leaf.shape}. "
                f"Pick image leaves with keys=."
            )
        image = leaf[None] if leaf.ndim == 2 else np.moveaxis(leaf, -1, -3)
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / np.float32(255)
        return adapter("torch").data_from_numpy(image)
