"""Pre- and post-processing shared by the tasks, as the manifest's input spec describes it.

An image batch goes: to float, resized to the input's height and width
(bilinear, :class:`forgeml.data.transforms.Resize`), converted to the input's
channels (grayscale <-> RGB, BGR order, alpha dropped), ``(x - mean) * scale``
per channel, cast to the input's dtype, and arranged in its layout (NCHW,
NHWC, or flat: ``(N, prod(shape))``). A feature batch goes ``(x - mean) *
scale`` per feature, cast, and shaped ``(N, *shape)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError
from forgeml.eval._manifest import InputSpec

#: ITU-R BT.601 luma weights, as Pillow's ``convert("L")``
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImagePlan:
    """What preprocessing does for one input spec (computed once per spec)."""

    height: int | None
    width: int | None
    channels: int | None
    bgr: bool
    work: Any  # the float dtype computed in
    dtype: Any
    mean: np.ndarray | None  # None: all zeros (skipped)
    scale: np.ndarray | None  # None: all ones (skipped)
    layout: str
    size: int  # values per sample


def _spec_channels(spec: InputSpec) -> int | None:
    if spec.color_mode == "grayscale":
        return 1
    if spec.color_mode in ("rgb", "bgr"):
        return 3
    return None


@functools.lru_cache(maxsize=64)
def image_plan(spec: InputSpec) -> ImagePlan:
    """How images become this input: target height, width, channels, dtype, layout."""
    shape = tuple(spec.shape)
    height: int | None
    width: int | None
    channels: int | None
    if spec.layout in ("NCHW", "NHWC"):
        if len(shape) != 3:
            raise EvalError(
                f"Input '{spec.name}' has layout {spec.layout}, so its shape must be 3 numbers "
                f"({'C, H, W' if spec.layout == 'NCHW' else 'H, W, C'}). Got {list(shape)}."
            )
        if spec.layout == "NCHW":
            channels, height, width = shape
        else:
            height, width, channels = shape
    elif len(shape) == 3:  # flat, described as (H, W, C)
        height, width, channels = shape
    elif len(shape) == 2:  # flat, described as (H, W)
        (height, width), channels = shape, _spec_channels(spec) or 1
    else:  # flat (D,): no spatial size to resize to
        height = width = None
        channels = _spec_channels(spec)
    named = _spec_channels(spec)
    if named is not None and channels is not None and named != channels:
        raise EvalError(
            f"Input '{spec.name}' has color_mode {spec.color_mode} ({named} channel(s)) but "
            f"its shape {list(shape)} has {channels}."
        )
    dtype = np.dtype(spec.dtype)
    work = np.float64 if dtype == np.float64 else np.float32
    return ImagePlan(
        height=height,
        width=width,
        channels=channels,
        bgr=spec.color_mode == "bgr",
        work=work,
        dtype=dtype,
        mean=_per_channel(spec.mean, 0.0, channels, spec, "mean", work),
        scale=_per_channel(spec.scale, 1.0, channels, spec, "scale", work),
        layout=spec.layout,
        size=math.prod(shape),
    )


def _per_channel(
    values: Sequence[float],
    neutral: float,
    channels: int | None,
    spec: InputSpec,
    name: str,
    work: Any,
) -> np.ndarray | None:
    if all(v == neutral for v in values):
        return None
    if len(values) != 1 and channels is not None and len(values) != channels:
        raise EvalError(
            f"Input '{spec.name}' has {len(values)} {name} values for {channels} channels. "
            f"Give one value, or one per channel."
        )
    return np.asarray(values, dtype=work)


def convert_channels(x: np.ndarray, channels: int | None, bgr: bool = False) -> np.ndarray:
    """Channels-last images (``..., H, W, C``) with ``channels`` channels (1 or 3).

    RGBA drops its alpha, grayscale is repeated to RGB, RGB becomes grayscale by
    its luma; ``bgr`` reverses the RGB channels. ``channels=None`` keeps them.
    """
    have = x.shape[-1]
    if have == 4 and channels != 4:
        x, have = x[..., :3], 3
    if channels is not None and have != channels:
        if have == 1 and channels == 3:
            x = np.repeat(x, 3, axis=-1)
        elif have == 3 and channels == 1:
            x = (x @ np.asarray(LUMA, dtype=x.dtype))[..., None]
        else:
            raise EvalError(
                f"Cannot convert images with {have} channels to {channels}. Images are "
                f"grayscale (1 channel), RGB (3) or RGBA (4)."
            )
    if bgr and x.shape[-1] == 3:
        x = x[..., ::-1]
    return x


def _to_nhwc(images: np.ndarray, work: Any) -> np.ndarray:
    x = np.array(images, dtype=work)  # a copy: later steps work in place
    if x.ndim == 3:
        return x[..., None]
    if x.ndim != 4:
        raise EvalError(
            f"An image batch is (N, H, W) or (N, H, W, C) (channels last). Got shape "
            f"{tuple(images.shape)}."
        )
    return x


def _resize(x: np.ndarray, plan: ImagePlan) -> np.ndarray:
    if plan.height is None or plan.width is None or x.shape[1:3] == (plan.height, plan.width):
        return x
    from forgeml.data.transforms import Resize

    resized: np.ndarray = Resize((plan.height, plan.width), layout="HWC")(x)
    return resized


def preprocess_images(raw: Any, spec: InputSpec) -> np.ndarray:
    """A batch of raw images -> the model input ``spec`` describes.

    ``raw`` is an array ``(N, H, W)`` or ``(N, H, W, C)`` (channels last), or a
    list of such images (of any sizes: each is resized alone).
    """
    plan = image_plan(spec)
    if isinstance(raw, np.ndarray):
        x = _resize(convert_channels(_to_nhwc(raw, plan.work), plan.channels, plan.bgr), plan)
    else:
        images = [np.asarray(image) for image in raw]
        if not images:
            raise EvalError("An image batch is empty.")
        x = np.concatenate(
            [
                _resize(
                    convert_channels(_to_nhwc(image[None], plan.work), plan.channels, plan.bgr),
                    plan,
                )
                for image in images
            ]
        )
    if plan.mean is not None:
        x = x - plan.mean
    if plan.scale is not None:
        x = x * plan.scale
    x = _cast(x, plan.dtype)
    per_sample = math.prod(x.shape[1:])
    if per_sample != plan.size:
        raise EvalError(
            f"Images of {'x'.join(str(d) for d in x.shape[1:])} (H x W x C) do not fit input "
            f"'{spec.name}' of shape {list(spec.shape)} ({spec.layout}). Give the input its "
            f"height, width and channels in its shape, or a color_mode."
        )
    if plan.layout == "NCHW":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if plan.layout == "NHWC":
        return np.ascontiguousarray(x)
    return x.reshape(len(x), plan.size)


def _cast(x: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(np.clip(np.rint(x), info.min, info.max), dtype=dtype)
    if dtype.kind == "b":
        return np.asarray(x != 0)
    return x.astype(dtype, copy=False)


@functools.lru_cache(maxsize=64)
def _feature_plan(spec: InputSpec) -> tuple[int, np.ndarray | None, np.ndarray | None, Any]:
    size = math.prod(spec.shape)
    dtype = np.dtype(spec.dtype)
    work = np.float64 if dtype == np.float64 else np.float32
    mean = _per_channel(spec.mean, 0.0, size, spec, "mean", work)
    scale = _per_channel(spec.scale, 1.0, size, spec, "scale", work)
    return size, mean, scale, dtype


def preprocess_features(raw: Any, spec: InputSpec) -> np.ndarray:
    """A batch of feature rows ``(N, D)`` -> ``(x - mean) * scale`` per feature, cast,
    shaped ``(N, *spec.shape)``."""
    size, mean, scale, dtype = _feature_plan(spec)
    x = np.asarray(raw)
    x = x.reshape(len(x), -1)
    if x.shape[1] != size:
        raise EvalError(
            f"The dataset has {x.shape[1]} features per sample; input '{spec.name}' of the "
            f"model takes {size} (shape {list(spec.shape)})."
        )
    if mean is not None or scale is not None or dtype.kind not in "f":
        x = x.astype(mean.dtype if mean is not None else np.float64, copy=False)
        if mean is not None:
            x = x - mean
        if scale is not None:
            x = x * scale
    x = _cast(x, dtype)
    return x.reshape((len(x), *spec.shape))


def class_indices(outputs: np.ndarray) -> np.ndarray:
    """Scores ``(N, C)`` -> the index of the highest; a vector ``(N,)`` is taken as class
    indices (integers) or the probability of class 1 (floats)."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2:
        if outputs.shape[1] == 1:
            return (outputs[:, 0] > 0.5).astype(np.int64)
        return np.asarray(np.argmax(outputs, axis=1))
    if outputs.ndim == 1:
        if outputs.dtype.kind in "iub":
            return outputs.astype(np.int64)
        return (outputs > 0.5).astype(np.int64)
    return np.asarray(np.argmax(outputs.reshape(len(outputs), -1), axis=1))


def regression_values(outputs: np.ndarray) -> np.ndarray:
    """Outputs ``(N,)`` or ``(N, 1)`` -> values ``(N,)``; several outputs stay ``(N, K)``."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    return outputs
