"""Dataset sources the tasks read: bundled names, image folders, ``.npz``, ``.csv``, Datasets.

Every source becomes an :class:`~forgeml.eval.EvalData` whose batches hold raw
samples (images channels last, or feature rows) and label indices. Class
labels are matched to the manifest's ``output.labels`` by name when the
source names its classes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgeml._core._errors import EvalError, did_you_mean
from forgeml.eval._bundled import BUNDLED, is_bundled, load_bundled, parse_name
from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import Batch, EvalData

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
#: ``.npz`` keys read as samples and as labels, first found wins
X_KEYS = ("x", "X", "images", "features", "data")
Y_KEYS = ("y", "Y", "labels", "targets", "target")


@dataclass
class Source:
    """A dataset read into memory: samples, labels as found, and class names when known."""

    name: str
    x: Any  # an array (N, ...) or a list of arrays
    y: np.ndarray | None
    #: the names of the classes the integer labels in ``y`` index (None: unknown)
    classes: Sequence[str] | None = None
    ids: list[str] | None = None
    problems: list[str] = field(default_factory=list)


def describe_sources(task: str) -> str:
    bundled = ", ".join(BUNDLED)
    if task == "image":
        return "a bundled name (digits), a folder of images, an .npz file or a forgeml Dataset"
    return f"a bundled name ({bundled}), a .csv or .npz file, or a forgeml Dataset"


def source_kind(source: Any, task: str) -> str:
    """``"bundled"``, ``"folder"``, ``"npz"``, ``"csv"``, ``"dataset"`` or ``"arrays"``."""
    from forgeml.data import Dataset

    if isinstance(source, Dataset):
        return "dataset"
    if isinstance(source, np.ndarray) or (
        isinstance(source, tuple) and len(source) == 2 and not isinstance(source[0], str)
    ):
        return "arrays"
    if not isinstance(source, str | os.PathLike):
        raise EvalError(f"A dataset is {describe_sources(task)}. Got a {type(source).__name__}.")
    text = os.fspath(source)
    if isinstance(source, str) and is_bundled(source):
        parse_name(source)  # checks the part (":test", ":train", ":all")
        return "bundled"
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in (".npz", ".csv"):
            return suffix[1:]
        raise EvalError(
            f"Cannot read dataset file '{text}': the {task} tasks read .npz and .csv files "
            f"and folders of images. Got a {suffix or 'suffixless'} file."
        )
    if suffix in (".npz", ".csv") or os.sep in text or text.startswith((".", "~")):
        raise EvalError(f"Dataset '{text}' does not exist (no such file or folder).")
    parse_name(text)  # raises: unknown, with the bundled names and the closest one
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------- labels


def encode_labels(
    values: Any, classes: Sequence[str] | None, manifest: Manifest, where: str
) -> np.ndarray:
    """Label values -> class indices of the model.

    Integer labels index ``classes`` (the source's class names) when known, and
    are mapped by name to ``output.labels``; else they are the model's indices.
    Classes that match no label are taken in order only when they are bare indices
    (``"0"``, ``"1"``, ...); other names are an error, since sorted folder names
    (``"eight", "five", ...``) need not be in the model's order.
    String labels are mapped by name to ``output.labels``, or to their sorted
    order when the manifest has none.
    """
    array = np.asarray(values)
    wanted = manifest.output.labels
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise EvalError(
                f"{where}: class labels must be integers or names. Got non-integer numbers "
                f"such as {array[array != np.round(array)][:3].tolist()}."
            )
        array = array.astype(np.int64)
    if array.dtype.kind in "iub":
        array = array.astype(np.int64)
        if classes is None or wanted is None or tuple(classes) == tuple(wanted):
            return array
        names = list(classes)
        known = {name: i for i, name in enumerate(wanted)}
        found = [name in known for name in names]
        if not any(found) and len(names) == len(wanted):
            if names == [str(i) for i in range(len(names))]:
                return array  # the classes are bare indices ("0", "1", ...): the model's order
            raise EvalError(
                f"{where}: none of the dataset's classes ({', '.join(names)}) is a label of "
                f"model '{manifest.name}' (its labels: {', '.join(wanted)}), so they cannot be "
                f"matched by name, and their order may not be the model's. Rename the classes "
                f"(e.g. the class folders) to the model's labels, or set the manifest's "
                f"output.labels to the dataset's class names in the order of the model's outputs."
            )
        mapping = np.array([known.get(name, -1) for name in names], dtype=np.int64)
        if not all(found):
            missing = [n for n, ok in zip(names, found, strict=True) if not ok]
            raise EvalError(
                f"{where}: the classes {', '.join(missing)} are not labels of model "
                f"'{manifest.name}' (its labels: {', '.join(wanted)})."
                + did_you_mean(missing[0], wanted)
            )
        mapped: np.ndarray = mapping[array]
        return mapped
    strings = [str(v) for v in array.ravel().tolist()]
    if wanted is not None:
        known = {name: i for i, name in enumerate(wanted)}
        unknown = sorted({s for s in strings if s not in known})
        if unknown:
            raise EvalError(
                f"{where}: the labels {', '.join(unknown[:5])} are not labels of model "
                f"'{manifest.name}' (its labels: {', '.join(wanted)})."
                + did_you_mean(unknown[0], wanted)
            )
        return np.array([known[s] for s in strings], dtype=np.int64)
    order = {name: i for i, name in enumerate(sorted(set(strings)))}
    return np.array([order[s] for s in strings], dtype=np.int64)


# ---------------------------------------------------------------------------------- readers


def read_bundled(spec: str, task: str, allowed: Sequence[str]) -> Source:
    data = load_bundled(spec)
    if data.kind not in allowed:
        fitting = ", ".join(name for name, (_, kind) in BUNDLED.items() if kind in allowed)
        raise EvalError(
            f"Dataset '{spec}' is a {data.kind} dataset; this task reads {describe_sources(task)}"
            f" (bundled: {fitting})."
        )
    return Source(
        name=spec,
        x=data.x,
        y=data.y,
        classes=data.target_names,
        ids=None,
    )


def read_npz(path: Path) -> Source:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            x_key = next((k for k in X_KEYS if k in archive.files), None)
            if x_key is None:
                raise EvalError(
                    f"{path} has no samples: an .npz dataset holds them under 'x' (and the "
                    f"labels under 'y'). Its keys: {', '.join(keys) or '(none)'}."
                )
            y_key = next((k for k in Y_KEYS if k in archive.files), None)
            x = archive[x_key]
            y = archive[y_key] if y_key is not None else None
            classes = archive["classes"] if "classes" in archive.files else None
    except (OSError, ValueError) as exc:
        raise EvalError(f"Cannot read {path} as .npz: {exc}") from None
    if y is not None and len(y) != len(x):
        raise EvalError(f"{path}: 'x' has {len(x)} samples but 'y' has {len(y)} labels.")
    return Source(
        name=str(path),
        x=x,
        y=y,
        classes=[str(c) for c in classes.tolist()] if classes is not None else None,
    )


def _label_index(header: list[str], column: str | int | None, path: Path) -> int:
    if column is None:
        return len(header) - 1
    if isinstance(column, int) and not isinstance(column, bool):
        if -len(header) <= column < len(header):
            return column % len(header)
        raise EvalError(f"{path} has {len(header)} columns; label_column={column} is out of range.")
    if str(column) in header:
        return header.index(str(column))
    raise EvalError(
        f"{path} has no column '{column}'. Its columns: {', '.join(header)}."
        + did_you_mean(str(column), header)
    )


def read_csv(
    path: Path, label_column: str | int | None, *, regression: bool, limit: int | None
) -> Source:
    """A CSV file with a header row: numeric feature columns and one label column.

    Rows that cannot be read (a wrong number of fields, a feature that is not a
    number, an empty label) are skipped and reported.
    """
    problems: list[str] = []
    rows: list[list[float]] = []
    labels: list[str] = []
    ids: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if not header:
                raise EvalError(f"{path} is empty: a CSV dataset needs a header row.")
            header = [h.strip() for h in header]
            label = _label_index(header, label_column, path)
            for record in reader:
                if limit is not None and len(rows) >= limit:
                    break
                line = reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) != len(header):
                    problems.append(
                        f"{path.name} line {line}: {len(record)} fields, the header has "
                        f"{len(header)}; skipped."
                    )
                    continue
                try:
                    features = [float(c) for i, c in enumerate(record) if i != label]
                except ValueError:
                    bad = next(
                        (header[i], c)
                        for i, c in enumerate(record)
                        if i != label and not _is_number(c)
                    )
                    problems.append(
                        f"{path.name} line {line}: column '{bad[0]}' is not a number "
                        f"({bad[1]!r}); skipped."
                    )
                    continue
                value = record[label].strip()
                if not value or (regression and not _is_number(value)):
                    problems.append(
                        f"{path.name} line {line}: the label ({header[label]}) is "
                        f"{'empty' if not value else f'not a number ({value!r})'}; skipped."
                    )
                    continue
                rows.append(features)
                labels.append(value)
                ids.append(f"{path.name}:{line}")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalError(f"Cannot read {path} as CSV: {exc}") from None
    width = len(header) - 1
    x = np.array(rows, dtype=np.float64).reshape(len(rows), width)
    y: np.ndarray
    if regression:
        y = np.array([float(v) for v in labels], dtype=np.float64)
    elif all(_is_int(v) for v in labels):
        y = np.array([int(v) for v in labels], dtype=np.int64)
    else:
        y = np.array(labels, dtype=str)
    return Source(name=str(path), x=x, y=y, ids=ids, problems=problems)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_dataset(dataset: Any, limit: int | None) -> Source:
    """The samples of a ``forgeml.data.Dataset``: ``(x, y)`` pairs (supervised, or 2-tuples),
    else ``x``."""
    data = dataset.unbatch() if dataset.batched else dataset
    if limit is not None:
        data = data.take(limit)
    data = data.numpy()
    xs: list[Any] = []
    ys: list[Any] = []
    supervised = data.supervised
    for element in data:
        if supervised or (isinstance(element, tuple) and len(element) == 2):
            x, y = element
            ys.append(np.asarray(y))
        else:
            x = element
        xs.append(np.asarray(x))
    shapes = {x.shape for x in xs}
    x_all: Any = np.stack(xs) if len(shapes) == 1 else xs
    y_all = np.stack(ys) if ys else None
    return Source(name=type(dataset).__name__, x=x_all, y=y_all)


def read_arrays(source: Any) -> Source:
    if isinstance(source, np.ndarray):
        return Source(name="array", x=source, y=None)
    x, y = source
    x = np.asarray(x)
    y = None if y is None else np.asarray(y)
    if y is not None and len(y) != len(x):
        raise EvalError(f"The dataset has {len(x)} samples but {len(y)} labels.")
    return Source(name="arrays", x=x, y=y)


# ---------------------------------------------------------------------------------- batches


def array_batches(
    name: str,
    x: Any,
    y: np.ndarray | None,
    *,
    ids: list[str] | None = None,
    limit: int | None = None,
    problems: list[str] | None = None,
) -> EvalData:
    """EvalData over in-memory samples: batches are slices (no copies)."""
    size = len(x) if limit is None else min(limit, len(x))
    prefix = Path(name).name if os.sep in name else name
    if ids is None:  # built once: the runner reads the data more than once
        ids = [f"{prefix}[{i}]" for i in range(size)]

    def batches(batch_size: int) -> Iterator[Batch]:
        for start in range(0, size, batch_size):
            stop = min(start + batch_size, size)
            yield Batch(
                raw=x[start:stop],
                labels=None if y is None else y[start:stop],
                ids=ids[start:stop],
            )

    return EvalData(
        name=name, size=size, batches=batches, has_labels=y is not None, problems=problems or []
    )


@dataclass
class ImageFolder:
    """The image files of a folder: one sub-folder per class, or flat (no labels)."""

    root: Path
    files: list[Path]
    labels: np.ndarray | None
    classes: list[str] | None
    problems: list[str]


def scan_folder(root: Path) -> ImageFolder:
    """The images under ``root``, sorted. Sub-folders are classes (their names, sorted, give
    the label indices) and their images are found at any depth; with no sub-folders the
    folder is flat and has no labels. Other files are reported and skipped."""
    problems: list[str] = []
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]

    def images(paths: Sequence[Path]) -> list[Path]:
        found = []
        for path in paths:
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            else:
                problems.append(f"{path.relative_to(root)}: not an image file; skipped.")
        return found

    if not folders:
        return ImageFolder(root, images(entries), None, None, problems)
    files: list[Path] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        found = images(sorted(folder.rglob("*")))
        files += found
        labels += [index] * len(found)
    for path in entries:
        if path.is_file():
            problems.append(
                f"{path.relative_to(root)}: not in a class folder (the folder has class "
                f"sub-folders); skipped."
            )
    return ImageFolder(
        root, files, np.array(labels, dtype=np.int64), [f.name for f in folders], problems
    )


def read_image(path: Path, channels: int | None) -> np.ndarray:
    """An image file as an array (H, W) or (H, W, 3): grayscale when ``channels`` is 1 or
    the image is, else RGB."""
    from PIL import Image

    with Image.open(path) as image:
        if channels == 1 or (channels is None and image.mode in ("1", "L", "LA", "I", "F")):
            mode = "L"
        else:
            mode = "RGB"
        return np.asarray(image.convert(mode))


def folder_batches(
    folder: ImageFolder, labels: np.ndarray | None, channels: int | None, limit: int | None
) -> EvalData:
    """EvalData reading the images lazily, batch by batch; unreadable files are skipped
    and reported once in ``problems`` (each batch still holds ``batch_size`` images)."""
    files = folder.files if limit is None else folder.files[:limit]
    problems = list(folder.problems)
    reported: set[Path] = set()
    root = folder.root

    def batches(batch_size: int) -> Iterator[Batch]:
        images: list[np.ndarray] = []
        picked: list[int] = []
        for index, path in enumerate(files):
            try:
                images.append(read_image(path, channels))
            except Exception as exc:  # Pillow raises many types for damaged files
                if path not in reported:
                    reported.add(path)
                    reason = str(exc).strip() or type(exc).__name__
                    problems.append(
                        f"{path.relative_to(root)}: cannot read the image ({reason}); skipped."
                    )
                continue
            picked.append(index)
            if len(images) == batch_size:
                yield _image_batch(images, picked, files, root, labels)
                images, picked = [], []
        if images:
            yield _image_batch(images, picked, files, root, labels)

    return EvalData(
        name=str(root),
        size=len(files),
        batches=batches,
        has_labels=labels is not None,
        problems=problems,
    )


def _image_batch(
    images: list[np.ndarray],
    picked: list[int],
    files: list[Path],
    root: Path,
    labels: np.ndarray | None,
) -> Batch:
    raw: Any = np.stack(images) if len({i.shape for i in images}) == 1 else images
    return Batch(
        raw=raw,
        labels=None if labels is None else labels[picked],
        ids=[str(files[i].relative_to(root)) for i in picked],
    )
