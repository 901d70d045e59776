"""scikit-learn's bundled datasets, split the same way for training the zoo and evaluating.

``digits`` is the held-out test part; ``digits:train`` the part the zoo trains
on; ``digits:all`` everything. The split is stratified and seeded, so it is the
same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError, did_you_mean

#: name -> (sklearn loader, kind)
BUNDLED = {
    "digits": ("load_digits", "image"),
    "iris": ("load_iris", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
PARTS = ("test", "train", "all")
TEST_FRACTION = 0.25
SEED = 0


@dataclass(frozen=True)
class BundledData:
    name: str
    part: str
    #: digits: (N, 8, 8) float64 in [0, 16]; tabular: (N, features)
    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]
    kind: str
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...] | None


def parse_name(spec: str) -> tuple[str, str]:
    """``"digits"`` -> ``("digits", "test")``; ``"iris:train"`` -> ``("iris", "train")``."""
    name, _, part = spec.partition(":")
    part = part or "test"
    if name not in BUNDLED:
        raise EvalError(
            f"Unknown dataset '{name}'. Bundled: {', '.join(BUNDLED)}; or give a path "
            f"(a folder of images, .npz, .csv)." + did_you_mean(name, BUNDLED)
        )
    if part not in PARTS:
        raise EvalError(f"Dataset part must be one of {', '.join(PARTS)}. Got '{spec}'.")
    return name, part


def is_bundled(spec: object) -> bool:
    return isinstance(spec, str) and spec.partition(":")[0] in BUNDLED


def load_bundled(spec: str) -> BundledData:
    """A bundled dataset's part (no download: the data ships with scikit-learn)."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    name, part = parse_name(spec)
    loader, kind = BUNDLED[name]
    data = getattr(sklearn.datasets, loader)()
    x = data.images if kind == "image" else data.data
    y = data.target
    if part != "all":
        stratify = y if kind != "regression" else None
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=stratify
        )
        x, y = (x_train, y_train) if part == "train" else (x_test, y_test)
    targets = getattr(data, "target_names", None)
    features = getattr(data, "feature_names", None)  # a list, an array (breast_cancer) or None
    return BundledData(
        name=name,
        part=part,
        x=np.asarray(x),
        y=np.asarray(y),
        kind=kind,
        feature_names=tuple(str(f) for f in features) if features is not None else (),
        target_names=tuple(str(t) for t in targets)
        if targets is not None and kind != "regression"
        else None,
    )
