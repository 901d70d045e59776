"""Datasets as lazy chains of transformations, in numpy, torch or TensorFlow.

``NumpyDataset(x)``, ``TorchDataset(torch_dataset)`` and
``TFDataset(tf_dataset)`` wrap data; ``peek``, ``batch``, ``unbatch``,
``map``, ``map_el``, ``apply_X``/``apply_Y``, ``take``, ``skip``, ``shuffle``
and ``collect`` build new datasets without computing anything until they are
iterated; ``.numpy()``, ``.torch()`` and ``.tf()`` convert between backends,
keeping values and dtypes. Tree transforms for nested samples (an image and
its mask cropped alike) are in :mod:`forgeml.data.transforms`.

Importing this package imports numpy only: torch and TensorFlow load through
their framework adapters when a dataset needs them.
"""

from forgeml._core._errors import DataError
from forgeml.data._dataset import Dataset, NumpyDataset, TFDataset, TorchDataset

__all__ = ["DataError", "Dataset", "NumpyDataset", "TFDataset", "TorchDataset"]
