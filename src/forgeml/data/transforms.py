"""Tree transforms: steps applied to chosen leaves of nested samples.

``ComposeTree([RandomCrop(16, keys=("image", "mask")), ...], seed=0)`` runs
its steps in order on a sample such as ``{"image": ..., "mask": ..., "label":
...}``. Each step names the leaves it changes (``keys=``); a random step
draws its parameters once per sample, so an image and its mask get the same
crop or flip. Steps work on numpy arrays (HWC) and torch tensors (CHW).
"""

from forgeml.data._transforms import (
    Cast,
    ComposeTree,
    Key,
    Layout,
    Normalize,
    RandomCrop,
    RandomFlip,
    Resize,
    Select,
    Step,
    ToTensor,
)

__all__ = [
    "Cast",
    "ComposeTree",
    "Key",
    "Layout",
    "Normalize",
    "RandomCrop",
    "RandomFlip",
    "Resize",
    "Select",
    "Step",
    "ToTensor",
]
