"""JSON encoding of constructor arguments with typed tags, and class import paths.

Plain JSON values stay as they are; everything else is a one-key object whose
key names its type: ``{"__tuple__": [...]}``, ``{"__dict__": [[k, v], ...]}``,
``{"__ndarray__": "<base64 .npy>"}``, ``{"__object__": {...definition...}}``,
``{"__objectdef__": {...}}``, ``{"__class__": "pkg.mod:Qual"}``, ``{"__enum__": ...}``,
``{"__path__": "..."}``, ``{"__float__": "nan"}``, ``{"__bytes__": "<base64>"}``,
``{"__set__": [...]}``. Decoding never unpickles and imports classes only by path.
"""

from __future__ import annotations

import base64
import enum
import importlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from forgeml._core._errors import ObjectError

TAGS = (
    "__tuple__",
    "__dict__",
    "__ndarray__",
    "__npscalar__",
    "__object__",
    "__objectdef__",
    "__class__",
    "__enum__",
    "__path__",
    "__float__",
    "__bytes__",
    "__set__",
)


def class_path(cls: type) -> str:
    """``"package.module:Qual.Name"`` for a class that can be imported again."""
    qualname = cls.__qualname__
    if "<locals>" in qualname:
        raise ObjectError(
            f"Class {qualname} is defined inside a function, so it cannot be imported "
            f"when the object is loaded. Define it at module level."
        )
    return f"{cls.__module__}:{qualname}"


def import_class(path: str, allow: Iterable[str] | None = None) -> Any:
    """Import ``"package.module:Qual.Name"``; with ``allow``, only from those module prefixes."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ObjectError(f"Invalid class path {path!r}: expected 'package.module:ClassName'.")
    if allow is not None:
        prefixes = tuple(allow)
        if not any(module_name == p.rstrip(".") or module_name.startswith(p) for p in prefixes):
            raise ObjectError(
                f"Class {path!r} is not allowed: its module is outside the allowlist "
                f"{list(prefixes)}. Add its package to allow= if you trust it."
            )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ObjectError(
            f"Cannot import module '{module_name}' for class {path!r}: {exc}. Install the "
            f"package that defines it (classes from a script's __main__ load only in that script)."
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            hint = (
                " Classes defined in a script run as __main__ load only while that script "
                "runs; move the class into an importable module."
                if module_name == "__main__"
                else ""
            )
            raise ObjectError(f"Module '{module_name}' has no class {qualname!r}.{hint}") from None
    if not isinstance(obj, type):
        raise ObjectError(f"{path!r} is not a class (got {type(obj).__name__}).")
    return obj


def _array_to_text(array: np.ndarray[Any, Any]) -> str:
    if array.dtype.hasobject:
        raise ObjectError("Arrays of Python objects cannot be stored safely; use numeric arrays.")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _array_from_text(text: str) -> np.ndarray[Any, Any]:
    array: np.ndarray[Any, Any] = np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)
    return array


def encode(value: Any, on_object: Callable[[Any], Any] | None = None) -> Any:
    """Encode ``value`` as JSON-safe data with typed tags.

    ``on_object`` encodes :class:`forgeml.Object` and ``ObjectDef`` values (the
    objects module passes its own, so this codec does not import it).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if on_object is not None:
        encoded = on_object(value)
        if encoded is not None:
            return encoded
    if isinstance(value, enum.Enum):
        return {"__enum__": [class_path(type(value)), encode(value.value, on_object)]}
    if isinstance(value, list):
        return [encode(v, on_object) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, on_object) for v in value]}
    if isinstance(value, set | frozenset):
        items = [encode(v, on_object) for v in value]
        return {"__set__": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, Mapping):
        return {
            "__dict__": [[encode(k, on_object), encode(v, on_object)] for k, v in value.items()]
        }
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _array_to_text(value)}
    if isinstance(value, np.generic):
        return {"__npscalar__": _array_to_text(np.asarray(value))}
    if isinstance(value, type):
        return {"__class__": class_path(value)}
    if isinstance(value, PurePath):
        return {"__path__": str(value)}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    raise ObjectError(
        f"Cannot record a constructor argument of type {type(value).__name__} ({value!r:.80}). "
        f"Arguments must be JSON-like values, tuples, sets, numpy arrays, classes, enums, paths, "
        f"Objects or ObjectDefs; keep other values as state (save_object_imp)."
    )


def decode(
    data: Any,
    *,
    allow: Iterable[str] | None = None,
    on_object: Callable[[str, Any], Any] | None = None,
) -> Any:
    """Invert :func:`encode`; ``on_object(tag, payload)`` rebuilds objects and definitions."""
    if isinstance(data, list):
        return [decode(v, allow=allow, on_object=on_object) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) != 1 or next(iter(data)) not in TAGS:
        raise ObjectError(f"Malformed encoded value: {json.dumps(data)[:120]}.")
    tag, payload = next(iter(data.items()))

    def sub(v: Any) -> Any:
        return decode(v, allow=allow, on_object=on_object)

    if tag == "__tuple__":
        return tuple(sub(v) for v in payload)
    if tag == "__set__":
        return {sub(v) for v in payload}
    if tag == "__dict__":
        return {sub(k): sub(v) for k, v in payload}
    if tag == "__ndarray__":
        return _array_from_text(payload)
    if tag == "__npscalar__":
        return _array_from_text(payload)[()]
    if tag == "__float__":
        return float(payload)
    if tag == "__path__":
        return Path(payload)
    if tag == "__bytes__":
        return base64.b64decode(payload)
    if tag == "__class__":
        return import_class(payload, allow)
    if tag == "__enum__":
        enum_cls = import_class(payload[0], allow)
        if not issubclass(enum_cls, enum.Enum):
            raise ObjectError(
                f"An encoded enum names {payload[0]!r}, which is not an Enum class; "
                f"refusing to call it."
            )
        return enum_cls(sub(payload[1]))
    if on_object is None:
        raise ObjectError(f"Cannot decode {tag} here.")
    return on_object(tag, payload)


def canonical(data: Any) -> str:
    """A stable text form of encoded data (for hashing and equality)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
