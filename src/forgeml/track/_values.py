"""Turning configs and arguments into MLflow params, and the limits MLflow puts on them."""

from __future__ import annotations

import enum
import numbers
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from forgeml._core._errors import TrackError

#: Longest param value stored; longer ones are cut (the full config is an artifact).
#: MLflow 2.x/3.x servers accept 6000, older ones 500: 500 works with every server.
MAX_PARAM_LENGTH = 500
MAX_TAG_LENGTH = 8000
MAX_KEY_LENGTH = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

#: Config keys that describe how a process was launched, not what it computes: they
#: differ between the first attempt of a run and its resumption, so they are not params.
VOLATILE_KEYS = frozenset(
    {"logfile", "daemon", "rank", "local_rank", "dist_port", "run_id", "tracking.run_id"}
)

_NAME = re.compile(r"^[/\w.\- :]*$")
T = TypeVar("T")


def check_key(key: object, kind: str) -> str:
    """``key`` if MLflow accepts it as a param, metric or tag name; else a TrackError."""
    if not isinstance(key, str) or not key:
        raise TrackError(f"A {kind} name must be a non-empty string. Got {key!r}.")
    if len(key) > MAX_KEY_LENGTH:
        raise TrackError(
            f"The {kind} name {key[:40]!r}... has {len(key)} characters; "
            f"MLflow takes at most {MAX_KEY_LENGTH}."
        )
    normalized = posixpath.normpath(key)
    if (
        not _NAME.match(key)
        or normalized != key
        or key.startswith(("/", ".."))
        or normalized == "."
    ):
        raise TrackError(
            f"Invalid {kind} name {key!r}: names may only contain letters, digits, "
            f"'_', '-', '.', ' ', ':' and '/', and must not start with '/' or '..' "
            f"or contain '//' or '/./'."
        )
    return key


def clean_key(key: str) -> str:
    """A config key made into a valid param name (characters MLflow refuses become '_')."""
    cleaned = re.sub(r"[^/\w.\- :]", "_", key)
    cleaned = re.sub(r"/+", "/", cleaned).strip("/")
    return cleaned[:MAX_KEY_LENGTH] or "_"


def _simple(value: Any) -> Any:
    """Plain data for the text form of a value; objects become ``<ClassName>``.

    An object's default repr carries its memory address, which changes from one
    process to the next: resuming a run would then see a changed parameter.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return _simple(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _simple(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_simple(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_simple(v) for v in value), key=repr)
    if isinstance(value, numbers.Number):  # numpy scalars
        item = getattr(value, "item", None)
        return item() if callable(item) else str(value)
    return f"<{type(value).__qualname__}>"


def param_value(value: Any) -> str:
    """The text MLflow stores for a param value, at most :data:`MAX_PARAM_LENGTH` long."""
    text = value if isinstance(value, str) else str(_simple(value))
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - 3] + "..."
    return text


def tag_value(value: Any, *, keep_end: bool = False) -> str:
    text = str(value)
    if len(text) > MAX_TAG_LENGTH:
        cut = MAX_TAG_LENGTH - 4
        text = "...\n" + text[-cut:] if keep_end else text[:cut] + "\n..."
    return text


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: ``{"a": {"b": 1}}`` gives ``{"a.b": 1}``.

    Empty mappings stay as values; lists are values (not expanded by index).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_params(cfg: Mapping[str, Any]) -> dict[str, str]:
    """A config as params: flattened, launcher-only keys dropped, names made valid."""
    return {
        clean_key(key): param_value(value)
        for key, value in flatten(cfg).items()
        if key not in VOLATILE_KEYS
    }


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def mask_tree(value: Any) -> Any:
    """``value`` with known secrets masked (:func:`forgeml.secrets.mask_tree`)."""
    from forgeml.secrets import mask_tree as masker

    return masker(value)


def mask_text(text: str) -> str:
    """``text`` with known secrets masked (:func:`forgeml.secrets.mask`)."""
    from forgeml.secrets import mask

    return mask(text)
