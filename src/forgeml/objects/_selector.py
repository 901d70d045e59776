"""``Selector``: which objects a query wants, matched on their encoded definitions.

There is one matching path. A selector compares the *encoded* form of a
definition (``ObjectDef.to_dict()``: class path, encoded args and kwargs) plus
the class paths of its MRO. ``selector(obj)`` encodes ``obj`` and matches that;
:class:`forgeml.Repo` matches its index rows directly, so a query never imports
a stored class or opens an archive.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forgeml._core._errors import ObjectError
from forgeml.objects._codec import _array_from_text, canonical, class_path, encode
from forgeml.objects._object import Object, ObjectDef, encode_objects

#: Tags whose payload is an encoded definition.
OBJECT_TAGS = ("__object__", "__objectdef__")
_ARRAY_TAGS = ("__ndarray__", "__npscalar__")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

#: class path -> class paths of the Object subclasses in its MRO
ClassMap = Mapping[str, Sequence[str]]


class Selector:
    """Selects objects by class, leading positional arguments and some keyword arguments.

    - ``cls``: a :class:`forgeml.Object` subclass, a class path ``"pkg.mod:Name"``
      (never imported), a bare class name ``"Name"`` (any module), or None (any
      class). Instances of subclasses match.
    - ``args``: a tuple that must be a prefix of the object's positional arguments.
    - ``kwargs``: each must be present among the object's keyword arguments and
      equal (``dry_id`` too). Defaults the constructor did not receive are not recorded,
      so they cannot be selected.

    A value may be a nested ``Selector`` (matched against an Object or ObjectDef
    argument), an ``ObjectDef`` (same class and arguments; its ``dry_id`` only
    counts when it has one) or any value an Object records. Values compare as
    decoded: ``1 == 1.0``, arrays by content, a tuple matches a tuple, not a list.

    >>> from forgeml.objects import Object
    >>> class Data(Object):
    ...     def __init__(self, n, scale=1.0):
    ...         self.n = n
    >>> Selector(Data, args=(2,))(Data(2, scale=0.5))
    True
    >>> Selector(Data, kwargs={"scale": 0.5})(Data(2))
    False

    Selectors are callable on Objects, ObjectDefs and :class:`RepoEntry` rows.
    """

    __slots__ = ("_args", "_kwargs", "args", "cls", "cls_name", "cls_path", "kwargs")

    def __init__(
        self,
        cls: type | str | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.cls: type | str | None = cls
        self.cls_path: str | None = None
        self.cls_name: str | None = None
        if isinstance(cls, type):
            if not issubclass(cls, Object):
                raise ObjectError(
                    f"Selector needs a subclass of forgeml.Object, a class path "
                    f"'pkg.module:Name' or a class name. Got {cls!r}."
                )
            self.cls_path = class_path(cls)
        elif isinstance(cls, str):
            module, sep, qualname = cls.partition(":")
            if sep and module and _NAME.match(module) and _NAME.match(qualname):
                self.cls_path = cls
            elif not sep and _NAME.match(cls):
                self.cls_name = cls
            else:
                raise ObjectError(
                    f"Invalid class for a Selector: {cls!r}. Use a class path "
                    f"'pkg.module:Name' or a class name such as 'Name'."
                )
        elif cls is not None:
            raise ObjectError(
                f"Selector needs a class, a class path or a class name. Got "
                f"{type(cls).__name__} {cls!r}."
            )
        if args is None:
            args = ()
        if isinstance(args, str | bytes) or not isinstance(args, tuple | list):
            raise ObjectError(
                f"Selector args must be a tuple of leading positional arguments. Got "
                f"{type(args).__name__} {args!r:.80}. Write args=({args!r:.40},) for one argument."
            )
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ObjectError(
                f"Selector kwargs must be a dict of keyword arguments with string keys. "
                f"Got {kwargs!r:.80}."
            )
        self.args: tuple[Any, ...] = tuple(args)
        self.kwargs: dict[str, Any] = dict(kwargs)
        self._args = tuple(encode(a, _encode_pattern) for a in self.args)
        self._kwargs = {k: encode(v, _encode_pattern) for k, v in self.kwargs.items()}

    # ------------------------------------------------------------------ matching

    def match(self, definition: Mapping[str, Any], classes: ClassMap | None = None) -> bool:
        """Whether an encoded definition matches (the one matching path).

        ``definition`` is ``ObjectDef.to_dict()`` output, or an archive manifest's
        ``"object"`` (whose ``"mro"`` is used). ``classes`` maps class paths to the
        paths of their MRO; a class missing from it counts as only itself.
        """
        if classes is None:
            classes = {}
        mro = definition.get("mro")
        if isinstance(mro, list) and isinstance(definition.get("cls"), str):
            classes = {**classes, definition["cls"]: mro}
        return _match_definition(self, definition, classes)

    def __call__(self, target: Any) -> bool:
        """Whether an Object, ObjectDef or :class:`RepoEntry` matches."""
        from forgeml.objects._repo import RepoEntry

        if isinstance(target, RepoEntry):
            return _match_definition(self, target.encoded, target.classes)
        if isinstance(target, Object):
            definition = target.definition()
        elif isinstance(target, ObjectDef):
            definition = target
        else:
            raise ObjectError(
                f"A Selector matches Objects, ObjectDefs and RepoEntry rows. Got "
                f"{type(target).__name__} {target!r:.80}."
            )
        return _match_definition(self, definition.to_dict(), class_map(definition))

    def class_matches(self, path: str, classes: ClassMap | None = None) -> bool:
        """Whether an object of class ``path`` (with the MRO in ``classes``) is selected."""
        return _class_ok(self, path, classes or {})

    def __repr__(self) -> str:
        if self.cls_path is not None:
            parts = [self.cls_path]
        elif self.cls_name is not None:
            parts = [repr(self.cls_name)]
        else:
            parts = ["None"]
        if self.args:
            parts.append(f"args={self.args!r}")
        if self.kwargs:
            parts.append(f"kwargs={self.kwargs!r}")
        return f"Selector({', '.join(parts)})"


def _encode_pattern(value: Any) -> Any:
    """Selectors stay as they are inside an encoded selector value; the rest encodes as usual."""
    if isinstance(value, Selector):
        return value
    return encode_objects(value)


def class_map(target: Object | ObjectDef) -> dict[str, list[str]]:
    """MRO class paths of every Object class in a definition, nested ones included.

    Read from the live classes, so nothing is imported.
    """
    result: dict[str, list[str]] = {}
    _collect_classes(target, result)
    return result


def _collect_classes(value: Any, out: dict[str, list[str]]) -> None:
    if isinstance(value, Object):
        value = value.definition()
    if isinstance(value, ObjectDef):
        path = class_path(value.cls)
        if path not in out:
            out[path] = [class_path(c) for c in value.cls.__mro__ if issubclass(c, Object)]
        for item in (*value.args, *value.kwargs.values()):
            _collect_classes(item, out)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect_classes(item, out)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_classes(key, out)
            _collect_classes(item, out)


def _class_ok(selector: Selector, path: Any, classes: ClassMap) -> bool:
    if selector.cls_path is None and selector.cls_name is None:
        return True
    if not isinstance(path, str):
        return False
    mro = classes.get(path) or (path,)
    if selector.cls_path is not None:
        return selector.cls_path in mro
    name = selector.cls_name
    for candidate in mro:
        qualname = candidate.partition(":")[2]
        if qualname == name or qualname.endswith(f".{name}"):
            return True
    return False


def _match_definition(selector: Selector, data: Mapping[str, Any], classes: ClassMap) -> bool:
    if not _class_ok(selector, data.get("cls"), classes):
        return False
    args = data.get("args", [])
    if len(selector._args) > len(args):
        return False
    for pattern, value in zip(selector._args, args, strict=False):
        if not _match_value(pattern, value, classes):
            return False
    kwargs = data.get("kwargs", {})
    for key, pattern in selector._kwargs.items():
        if key not in kwargs or not _match_value(pattern, kwargs[key], classes):
            return False
    return True


def _match_value(pattern: Any, value: Any, classes: ClassMap) -> bool:
    """Whether an encoded stored value equals an encoded selector value."""
    if isinstance(pattern, Selector):
        payload = _definition_payload(value)
        return payload is not None and _match_definition(pattern, payload, classes)
    if isinstance(pattern, list):
        return (
            isinstance(value, list)
            and len(value) == len(pattern)
            and all(_match_value(p, v, classes) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, dict):
        if not isinstance(value, dict) or len(pattern) != 1 or len(value) != 1:
            return False
        ((tag, payload),) = pattern.items()
        ((stored_tag, stored),) = value.items()
        if tag in OBJECT_TAGS:
            return stored_tag in OBJECT_TAGS and _same_definition(payload, stored, classes)
        if tag != stored_tag:
            return False
        if tag in ("__tuple__", "__set__"):
            return _match_value(payload, stored, classes)
        if tag == "__dict__":
            return _same_pairs(payload, stored, classes)
        if tag in _ARRAY_TAGS:
            return _same_array(payload, stored)
        if tag == "__enum__":
            return (
                isinstance(stored, list)
                and len(stored) == 2
                and payload[0] == stored[0]
                and _match_value(payload[1], stored[1], classes)
            )
        return bool(payload == stored)  # __class__, __path__, __bytes__, __float__
    if isinstance(value, dict | list):
        return False
    return bool(pattern == value)


def _definition_payload(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, payload),) = value.items()
        if tag in OBJECT_TAGS and isinstance(payload, dict):
            return payload
    return None


def _same_definition(pattern: Any, stored: Any, classes: ClassMap) -> bool:
    """An ObjectDef in a selector: same class and arguments; dry_id only if it has one."""
    if not isinstance(pattern, dict) or not isinstance(stored, dict):
        return False
    if pattern.get("cls") != stored.get("cls"):
        return False
    p_args, s_args = pattern.get("args", []), stored.get("args", [])
    if not _match_value(p_args, s_args, classes):
        return False
    p_kwargs = dict(pattern.get("kwargs", {}))
    s_kwargs = dict(stored.get("kwargs", {}))
    if "dry_id" not in p_kwargs:
        s_kwargs.pop("dry_id", None)
    if p_kwargs.keys() != s_kwargs.keys():
        return False
    return all(_match_value(p_kwargs[k], s_kwargs[k], classes) for k in p_kwargs)


def _same_pairs(pattern: Any, stored: Any, classes: ClassMap) -> bool:
    if not isinstance(pattern, list) or not isinstance(stored, list) or len(pattern) != len(stored):
        return False
    try:
        by_key = {canonical(k): v for k, v in stored}
        return all(
            canonical(k) in by_key and _match_value(v, by_key[canonical(k)], classes)
            for k, v in pattern
        )
    except (TypeError, ValueError):
        return False


def _same_array(pattern: Any, stored: Any) -> bool:
    if not isinstance(pattern, str) or not isinstance(stored, str):
        return False
    if pattern == stored:
        return True
    try:
        return bool(np.array_equal(_decoded_array(pattern), _array_from_text(stored)))
    except (ValueError, TypeError, ObjectError):
        return False


@functools.lru_cache(maxsize=64)
def _decoded_array(text: str) -> np.ndarray[Any, Any]:
    return _array_from_text(text)
