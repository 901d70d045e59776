"""What the tabular tasks share: reading feature datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml.eval._manifest import Manifest
from forgeml.eval.tasks._datasets import (
    Source,
    read_arrays,
    read_bundled,
    read_csv,
    read_dataset,
    read_npz,
    source_kind,
)


def read_tabular(
    source: Any,
    manifest: Manifest,
    *,
    regression: bool,
    limit: int | None,
    label_column: str | int | None,
) -> Source:
    """The source's samples, read as rows of features (images are flattened)."""
    kind = source_kind(source, "tabular")
    if label_column is None:
        label_column = manifest.attributes.get("label_column")
    if kind == "folder":
        from forgeml._core._errors import EvalError

        raise EvalError(f"The tabular tasks read .csv and .npz files, not folders ({source}).")
    if kind == "csv":
        return read_csv(Path(source).expanduser(), label_column, regression=regression, limit=limit)
    if kind == "bundled":
        allowed = ("regression",) if regression else ("classification", "image")
        data = read_bundled(str(source), "tabular", allowed)
        data.x = data.x.reshape(len(data.x), -1)
        return data
    if kind == "npz":
        return read_npz(Path(source).expanduser())
    if kind == "dataset":
        return read_dataset(source, limit)
    return read_arrays(source)
