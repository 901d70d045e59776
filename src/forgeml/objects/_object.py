"""``Object`` remembers how it was built; ``ObjectDef`` builds it again."""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from forgeml._core._errors import ObjectError
from forgeml.objects._codec import canonical, class_path, decode, encode, import_class

_ARGS = "_dry_args"
_KWARGS = "_dry_kwargs"


def _accepts_dry_id(init: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "dry_id" and p.kind is not p.VAR_KEYWORD for p in params)


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
    accepts_id = _accepts_dry_id(init)

    @functools.wraps(init)
    def __init__(self: Object, *args: Any, **kwargs: Any) -> None:
        if _ARGS not in self.__dict__:  # the outermost __init__ records the call
            dry_id = kwargs.get("dry_id") or str(uuid.uuid4())
            recorded = {k: v for k, v in kwargs.items() if k != "dry_id"}
            recorded["dry_id"] = dry_id
            self.__dict__[_ARGS] = tuple(args)
            self.__dict__[_KWARGS] = recorded
            if accepts_id:
                kwargs["dry_id"] = dry_id
        if not accepts_id:
            kwargs.pop("dry_id", None)
        init(self, *args, **kwargs)

    __init__._forgeml_wrapped = True  # type: ignore[attr-defined]
    return __init__


class Object:
    """A base class whose instances remember their constructor arguments and an id.

    >>> class Data(Object):
    ...     def __init__(self, data):
    ...         self.data = data
    >>> obj = Data([1, 2, 3])
    >>> obj.dry_args
    ([1, 2, 3],)
    >>> sorted(obj.dry_kwargs)
    ['dry_id']

    ``dry_id`` (a uuid4) is assigned unless passed; ``definition()`` returns the
    :class:`ObjectDef` that builds a fresh copy. Subclasses may define
    ``save_object_imp(archive)`` / ``load_object_imp(archive)`` for custom state.
    """

    #: Not part of a TorchScript program: ``torch.jit.script`` of a module that is also an
    #: Object (``class Net(Object, torch.nn.Module)``) compiles every property otherwise.
    __jit_unused_properties__ = ("dry_args", "dry_kwargs", "dry_id")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_forgeml_wrapped", False):
            cls.__init__ = _wrap_init(init)  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _ARGS not in self.__dict__:
            dry_id = kwargs.pop("dry_id", None) or str(uuid.uuid4())
            self.__dict__[_ARGS] = tuple(args)
            self.__dict__[_KWARGS] = {**kwargs, "dry_id": dry_id}
        # Cooperate with the next base, e.g. class Net(Object, torch.nn.Module).
        super().__init__()

    @property
    def dry_args(self) -> tuple[Any, ...]:
        """The positional constructor arguments."""
        args: tuple[Any, ...] = self.__dict__[_ARGS]
        return args

    @property
    def dry_kwargs(self) -> dict[str, Any]:
        """The keyword constructor arguments, including ``dry_id``."""
        kwargs: dict[str, Any] = self.__dict__[_KWARGS]
        return kwargs

    @property
    def dry_id(self) -> str:
        return str(self.dry_kwargs["dry_id"])

    def definition(self) -> ObjectDef:
        """The definition that builds a fresh copy of this object (same class, arguments, id)."""
        return ObjectDef(type(self), *self.dry_args, **self.dry_kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.definition().describe()}>"


class ObjectDef:
    """A class plus constructor arguments: builds an :class:`Object`.

    Arguments may themselves be Objects (recorded by their definitions and rebuilt
    on load) or ObjectDefs. Definitions compare and hash by class and arguments.

    >>> ObjectDef(Object, 3).build().dry_args
    (3,)
    """

    __slots__ = ("_cls", "_key", "args", "kwargs")

    def __init__(self, cls: type | str, *args: Any, **kwargs: Any) -> None:
        if isinstance(cls, str):
            cls = import_class(cls)
        if not isinstance(cls, type) or not issubclass(cls, Object):
            raise ObjectError(
                f"ObjectDef needs a subclass of forgeml.Object. Got {cls!r}. "
                f"Derive the class from Object so it records its arguments."
            )
        self._cls = cls
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self._key: str | None = None

    @property
    def cls(self) -> type:
        return self._cls

    @property
    def dry_id(self) -> str | None:
        value = self.kwargs.get("dry_id")
        return None if value is None else str(value)

    def build(self, **overrides: Any) -> Any:
        """A new object from these arguments (``overrides`` replace keyword arguments).

        Arguments pass as they are: a nested ObjectDef reaches the constructor as a
        definition (the constructor decides when to build it), exactly as recorded.
        """
        return self._cls(*self.args, **{**self.kwargs, **overrides})

    def category(self) -> ObjectDef:
        """This definition without ``dry_id``: every build gets a new id."""
        return ObjectDef(
            self._cls, *self.args, **{k: v for k, v in self.kwargs.items() if k != "dry_id"}
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe encoding stored in archives and repo indexes."""
        return {
            "cls": class_path(self._cls),
            "args": [encode(a, encode_objects) for a in self.args],
            "kwargs": {k: encode(v, encode_objects) for k, v in self.kwargs.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, allow: Iterable[str] | None = None) -> ObjectDef:
        """Rebuild a definition from :meth:`to_dict` output; classes load only from ``allow``."""
        allow = tuple(allow) if allow is not None else None

        def on_object(tag: str, payload: Any) -> Any:
            definition = ObjectDef.from_dict(payload, allow=allow)
            return definition.build() if tag == "__object__" else definition

        try:
            klass = import_class(data["cls"], allow)
            args = [decode(a, allow=allow, on_object=on_object) for a in data.get("args", [])]
            kwargs = {
                k: decode(v, allow=allow, on_object=on_object)
                for k, v in data.get("kwargs", {}).items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ObjectError(f"Malformed object definition: {exc!r}.") from None
        return ObjectDef(klass, *args, **kwargs)

    def key(self) -> str:
        if self._key is None:
            self._key = canonical(self.to_dict())
        return self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectDef):
            return NotImplemented
        return self._cls is other._cls and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def describe(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return ", ".join(parts)

    def __repr__(self) -> str:
        inner = self.describe()
        return f"ObjectDef({self._cls.__qualname__}{', ' + inner if inner else ''})"


def encode_objects(value: Any) -> Any:
    """The codec hook for Objects (recorded by definition) and ObjectDefs."""
    if isinstance(value, Object):
        return {"__object__": value.definition().to_dict()}
    if isinstance(value, ObjectDef):
        return {"__objectdef__": value.to_dict()}
    return None
