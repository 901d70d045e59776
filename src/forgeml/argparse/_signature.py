"""Command lines from function signatures: ``def train(*, lr: float = 1e-3)`` gives ``--lr``."""

from __future__ import annotations

import argparse
import enum
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

from forgeml._core._env import parse_bool
from forgeml._core._errors import ArgumentError
from forgeml.argparse._parser import ArgumentParser, scalar_converter
from forgeml.config import Config

_SEQUENCES = (list, tuple, set, frozenset, Sequence, typing.Sequence)


class FunctionParser(ArgumentParser):
    """An :class:`ArgumentParser` whose extra options are the parameters of one function."""

    def __init__(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        import docstring_parser

        doc = docstring_parser.parse(inspect.getdoc(fn) or "")
        description = "\n\n".join(
            part for part in (doc.short_description, doc.long_description) if part
        )
        kwargs.setdefault("description", description or None)
        super().__init__(**kwargs)
        self.function = fn
        self.params: list[inspect.Parameter] = []
        self.required: list[str] = []
        helps = {p.arg_name: p.description for p in doc.params}
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:
            raise ArgumentError(
                f"Cannot read the type hints of {fn.__qualname__}(): {exc}. "
                f"Make every annotation importable at module level."
            ) from exc
        builtin = {action.dest for action in self._actions}
        group = self.add_argument_group(f"{fn.__name__}() options")
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "cfg":
                continue
            self.params.append(param)
            if param.name in builtin:
                if param.default is not param.empty:
                    self.set_defaults(**{param.name: param.default})
                continue
            annotation = hints.get(param.name, param.empty)
            self._add_param(group, param, annotation, helps.get(param.name) or "")

    def _add_param(
        self,
        group: argparse._ArgumentGroup,
        param: inspect.Parameter,
        annotation: Any,
        help_text: str,
    ) -> None:
        name = param.name
        flags = [f"--{name.replace('_', '-')}"]
        if "_" in name:
            flags.append(f"--{name}")
        required = param.default is param.empty
        default = None if required else param.default
        if annotation is param.empty:
            annotation = type(default) if default is not None else str
        optional, base = _unwrap_optional(annotation)
        kwargs: dict[str, Any] = {"dest": name, "help": help_text}
        if required:  # checked after merging, so a --cfg file or override may set it
            kwargs["default"] = argparse.SUPPRESS
            kwargs["help"] = f"{help_text} (required)".lstrip()
            self.required.append(name)
        else:
            kwargs["default"] = default
        origin = get_origin(base)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            convert: Callable[[Any], Any] = _to_bool
        elif origin is typing.Literal:
            choices = list(get_args(base))
            kwargs["type"] = _choice_type(choices)
            kwargs["choices"] = choices
            convert = kwargs["type"]
        elif isinstance(base, type) and issubclass(base, enum.Enum):
            kwargs["type"] = _enum_type(base)
            kwargs["choices"] = list(base)
            kwargs["metavar"] = "{" + ",".join(m.name for m in base) + "}"
            convert = kwargs["type"]
        elif origin in _SEQUENCES or base in (list, tuple):
            item_args = [a for a in get_args(base) if a is not Ellipsis]
            item = _scalar_type(item_args[0] if item_args else str, name)
            kwargs["type"] = item
            kwargs["nargs"] = "+" if required else "*"
            container = tuple if (origin or base) is tuple else list

            def convert(value: Any, item: Callable[[str], Any] = item) -> Any:
                values = value if isinstance(value, list | tuple) else [value]
                return container(v if isinstance(v, item) else item(v) for v in values)  # type: ignore[arg-type]

            if container is tuple and default is not None:
                kwargs["default"] = tuple(default)
        else:
            scalar = _scalar_type(base, name)
            kwargs["type"] = scalar
            convert = scalar_converter(scalar)
        if optional:
            inner = convert
            convert = lambda value: None if value is None else inner(value)  # noqa: E731
        self.add_argument_to(group, flags, kwargs)
        self.set_converter(name, convert)

    def add_argument_to(
        self, group: argparse._ArgumentGroup, flags: list[str], kwargs: dict[str, Any]
    ) -> None:
        try:
            group.add_argument(*flags, **kwargs)
        except argparse.ArgumentError as exc:
            raise ArgumentError(
                f"Parameter '{kwargs['dest']}' of {self.function.__qualname__}() clashes with "
                f"an existing option: {exc}. Rename the parameter."
            ) from exc

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> Config:
        cfg = super().parse_args(args, namespace)
        missing = [f"--{name.replace('_', '-')}" for name in self.required if name not in cfg]
        if missing:
            self.error(
                f"the following arguments are required: {', '.join(missing)} "
                f"(give them here, in a --cfg file or as name=VALUE)"
            )
        return cfg

    def call(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the function with its parameters taken from ``cfg``."""
        return call_with_config(self.function, cfg, *args, **kwargs)


def call_with_config(fn: Callable[..., Any], cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with each parameter taken from ``cfg`` by name; a ``cfg`` parameter gets it all.

    Explicit ``args``/``kwargs`` go after the positional-only values and win over ``cfg``.
    """
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name in kwargs:
            continue
        value = cfg if param.name == "cfg" else cfg.get(param.name, param.default)
        if value is param.empty:
            raise ArgumentError(
                f"{fn.__qualname__}() needs '{param.name}', which the config does not set. "
                f"Pass --{param.name.replace('_', '-')} or {param.name}=VALUE."
            )
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[param.name] = value
    keywords.update(kwargs)
    return fn(*positional, *args, **keywords)


def _unwrap_optional(annotation: Any) -> tuple[bool, Any]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return len(members) < len(get_args(annotation)), members[0]
    return False, annotation


def _scalar_type(annotation: Any, name: str) -> Callable[[str], Any]:
    if annotation in (int, float, str, Path):
        return annotation  # type: ignore[no-any-return]
    if annotation is Any or annotation is object:
        return str
    if isinstance(annotation, type) and annotation.__module__ == "builtins":
        return annotation
    return _yaml_value


def _yaml_value(text: str) -> Any:
    from forgeml.config import parse_override

    return parse_override(f"value={text}")[1]


_yaml_value.__name__ = "YAML"


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_bool(value, name="The value")
        except ValueError:
            pass
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"invalid bool value: {value!r}")


def _choice_type(choices: list[Any]) -> Callable[[Any], Any]:
    by_text = {str(c): c for c in choices}

    def choice(value: Any) -> Any:
        if value in choices:
            return value
        if str(value) in by_text:
            return by_text[str(value)]
        raise argparse.ArgumentTypeError(
            f"invalid choice: {value!r} (choose from {', '.join(by_text)})"
        )

    choice.__name__ = "choice"
    return choice


def _enum_type(enum_cls: type[enum.Enum]) -> Callable[[Any], enum.Enum]:
    def member(value: Any) -> enum.Enum:
        if isinstance(value, enum_cls):
            return value
        try:
            return enum_cls[str(value)]
        except KeyError:
            try:
                return enum_cls(value)
            except ValueError:
                names = ", ".join(m.name for m in enum_cls)
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {value!r} (choose from {names})"
                ) from None

    member.__name__ = enum_cls.__name__
    return member


def parser_for(fn: Callable[..., Any], **kwargs: Any) -> FunctionParser:
    """A parser with the built-in run options plus one option per parameter of ``fn``."""
    return FunctionParser(fn, **kwargs)
