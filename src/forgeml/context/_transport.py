"""Values that cross the process boundary of a compute context, without pickle.

A value is encoded with the objects codec (JSON with typed tags) into a folder:
JSON-like values, tuples, sets, bytes, paths, classes, enums and small numpy
arrays go inline; large numpy arrays go to ``.npy`` files (``allow_pickle=False``);
:class:`forgeml.Object` values go to archives written by ``save_object`` and come
back through ``load_object``; ``ObjectDef`` values by their definition. Other
values are refused, unless the caller trusts them: then they are pickled
(``{"__object__": {"pickle": FILE}}``) and unpickled only by the process that
was told to trust them.
"""

from __future__ import annotations

import enum
import itertools
import pickle
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from forgeml._core._errors import ContextError
from forgeml.objects._codec import decode, encode

#: Arrays larger than this many bytes travel as .npy files rather than inline base64.
INLINE_ARRAY_BYTES = 64 * 1024
#: What the codec carries by itself (besides None, bools, numbers and strings).
_CODEC_TYPES = (
    enum.Enum,
    list,
    tuple,
    set,
    frozenset,
    Mapping,
    np.generic,
    type,
    PurePath,
    bytes,
)


class Transport:
    """Encodes values into ``folder`` and decodes them back (one folder per direction)."""

    def __init__(self, folder: Path, *, trust: bool = False) -> None:
        self.folder = folder
        self.trust = trust
        self._names = itertools.count()

    def _file(self, kind: str, suffix: str) -> tuple[Path, str]:
        name = f"{kind}/{next(self._names)}{suffix}"
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, name

    def dump(self, value: Any, what: str = "a value") -> Any:
        """``value`` as JSON-safe data; writes archives and arrays into the folder."""
        from forgeml.objects import Object, ObjectDef, save_object

        def on_object(item: Any) -> Any:
            if isinstance(item, Object):
                path, name = self._file("objects", ".dry")
                save_object(item, path)
                return {"__object__": {"archive": name}}
            if isinstance(item, ObjectDef):
                return {"__objectdef__": item.to_dict()}
            if isinstance(item, np.ndarray):
                if item.dtype.hasobject:
                    return self._pickled(item, what)
                if item.nbytes <= INLINE_ARRAY_BYTES:
                    return None
                path, name = self._file("arrays", ".npy")
                np.save(path, item, allow_pickle=False)
                return {"__object__": {"npy": name}}
            if isinstance(item, _CODEC_TYPES):
                return None
            return self._pickled(item, what)

        return encode(value, on_object)

    def _pickled(self, item: Any, what: str) -> Any:
        if not self.trust:
            raise ContextError(
                f"Cannot pass {what} of type {type(item).__module__}.{type(item).__qualname__} "
                f"({item!r:.60}) to or from a compute context: only JSON-like values, tuples, "
                f"sets, bytes, paths, classes, enums, numpy arrays, forgeml Objects (sent as "
                f"archives) and ObjectDefs cross the process boundary safely. Wrap a model in a "
                f"forgeml Object, convert tensors to numpy arrays, or pass trust=True "
                f"(ctx_trust= / call_trust=) to pickle values you trust."
            )
        path, name = self._file("pickles", ".pkl")
        try:
            path.write_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            raise ContextError(
                f"Cannot pickle {what} of type {type(item).__qualname__}: {exc}. Pass values "
                f"that can be pickled, or forgeml Objects."
            ) from exc
        return {"__object__": {"pickle": name}}

    def load(self, data: Any) -> Any:
        """Invert :meth:`dump` (archives load with ``load_object``; pickles only when trusted)."""
        from forgeml.objects import ObjectDef, load_object

        def on_object(tag: str, payload: Any) -> Any:
            if tag == "__objectdef__":
                return ObjectDef.from_dict(payload)
            if not isinstance(payload, dict) or len(payload) != 1:
                raise ContextError(f"Malformed value from a compute context: {payload!r:.80}.")
            kind, name = next(iter(payload.items()))
            path = self._member(str(name))
            if kind == "archive":
                return load_object(path, trust=self.trust)
            if kind == "npy":
                return np.load(path, allow_pickle=False)
            if kind == "pickle" and self.trust:
                return pickle.loads(path.read_bytes())  # trusted: see dump()
            raise ContextError(
                f"A value from a compute context is a {kind!r}, which this side does not "
                f"accept{' (pickles load only with trust=True)' if kind == 'pickle' else ''}."
            )

        return decode(data, on_object=on_object)

    def _member(self, name: str) -> Path:
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents or not path.is_file():
            raise ContextError(f"A value from a compute context names a missing file {name!r}.")
        return path
