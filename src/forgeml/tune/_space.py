"""Search spaces: dotted config keys mapped to distributions, read from YAML."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import TuneError, did_you_mean
from forgeml.config import Config
from forgeml.objects import ObjectDef

#: The distribution types a space may use.
TYPES = ("categorical", "float", "int")
_FIELDS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


@dataclass(frozen=True)
class Param:
    """One searched value: the dotted config key it sets and its distribution."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = field(default_factory=tuple)

    @classmethod
    def from_spec(cls, name: str, spec: Any, *, source: str = "the space") -> Param:
        """A parameter from ``{type: float, low: .., high: ..}`` or a list (categorical)."""
        if isinstance(spec, list | tuple):
            spec = {"type": "categorical", "choices": list(spec)}
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise TuneError(
                f"{source}: '{name}' must be a distribution such as "
                f"{{type: float, low: 1e-4, high: 1e-1, log: true}}, {{type: int, low: 8, "
                f"high: 128}}, {{type: categorical, choices: [relu, tanh]}} or a list of "
                f"choices. Got {spec!r}."
            )
        kind = str(spec["type"])
        if kind not in TYPES:
            raise TuneError(
                f"{source}: '{name}' has unknown type {kind!r}. Known: {', '.join(TYPES)}."
                + did_you_mean(kind, TYPES)
            )
        extra = sorted(set(map(str, spec)) - set(_FIELDS[kind]))
        if extra:
            raise TuneError(
                f"{source}: '{name}' ({kind}) has unknown field(s) {', '.join(extra)}. "
                f"A {kind} takes {', '.join(_FIELDS[kind][1:])}."
                + did_you_mean(extra[0], _FIELDS[kind])
            )
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list | tuple) or not choices:
                raise TuneError(
                    f"{source}: '{name}' (categorical) needs a non-empty list of choices. "
                    f"Got {choices!r}."
                )
            bad = [
                c for c in choices if c is not None and not isinstance(c, bool | int | float | str)
            ]
            if bad:
                raise TuneError(
                    f"{source}: '{name}' (categorical) has a choice that is not None, a bool, "
                    f"a number or a string: {bad[0]!r} ({type(bad[0]).__name__}). Optuna "
                    f"stores only those. Name each choice with a string (e.g. 'wide', "
                    f"'deep') or search an index (0, 1, ...), and map it to the value in "
                    f"your entry."
                )
            return cls(name, kind, choices=tuple(choices))
        low, high = spec.get("low"), spec.get("high")
        number = int if kind == "int" else float
        for label, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TuneError(
                    f"{source}: '{name}' ({kind}) needs a numeric '{label}'. Got {value!r}."
                )
            if kind == "int" and value != int(value):
                raise TuneError(
                    f"{source}: '{name}' (int) needs an integer '{label}'. Got {value!r}."
                )
        assert low is not None
        assert high is not None
        if low > high:
            raise TuneError(f"{source}: '{name}' has low > high ({low!r} > {high!r}). Swap them.")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise TuneError(
                f"{source}: '{name}' is searched on a log scale, so 'low' must be positive. "
                f"Got {low!r}."
            )
        step = spec.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
                raise TuneError(f"{source}: '{name}' needs a positive 'step'. Got {step!r}.")
            if log:
                raise TuneError(
                    f"{source}: '{name}' sets both 'step' and 'log: true', which Optuna "
                    f"cannot combine. Drop one of them."
                )
        return cls(
            name,
            kind,
            low=number(low),
            high=number(high),
            log=log,
            step=None if step is None else number(step),
        )

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value from an ``optuna.Trial``."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                self.name,
                int(self.low or 0),
                int(self.high or 0),
                step=int(self.step or 1),
                log=self.log,
            )
        return trial.suggest_float(
            self.name, float(self.low or 0), float(self.high or 0), step=self.step, log=self.log
        )

    def grid(self) -> list[Any]:
        """Every value of this parameter, for the grid sampler."""
        if self.type == "categorical":
            return list(self.choices)
        low, high = self.low or 0, self.high or 0
        if self.type == "int":
            if self.log:
                raise TuneError(
                    f"The grid sampler cannot enumerate '{self.name}' (an int on a log scale). "
                    f"Give it a 'step' instead of 'log', or list its values as choices."
                )
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step is None:
            raise TuneError(
                f"The grid sampler cannot enumerate '{self.name}' (a float without 'step'). "
                f"Give it a 'step', or list its values as choices."
            )
        count = math.floor((high - low) / self.step + 1e-9) + 1
        return [round(low + i * self.step, 12) for i in range(count)]

    def to_dict(self) -> dict[str, Any]:
        """The spec this parameter was read from (what ``from_spec`` reads)."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "type" not in value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


class SearchSpace:
    """The parameters of a search, each a dotted config key with a distribution.

    >>> space = SearchSpace.from_dict({"model.params.hidden": {"type": "int", "low": 8,
    ...                                                        "high": 64}})
    >>> space.names
    ('model.params.hidden',)

    Nested mappings flatten to dotted keys (``{model: {params: {hidden: {...}}}}``
    is ``model.params.hidden``); a list is a categorical choice.
    """

    def __init__(self, params: tuple[Param, ...], *, source: str = "the space") -> None:
        if not params:
            raise TuneError(f"{source} is empty: name at least one config key to search.")
        self.params = params
        self.source = source

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "the space") -> SearchSpace:
        if not isinstance(data, Mapping):
            raise TuneError(f"{source} must map dotted config keys to distributions. Got {data!r}.")
        return cls(
            tuple(Param.from_spec(n, s, source=source) for n, s in _flatten(data)),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchSpace:
        """Read a space file (YAML, loaded like a forgeml config)."""
        from forgeml.config import load

        file = Path(path)
        if not file.is_file():
            raise TuneError(f"Search space file '{file}' does not exist. Check the --space path.")
        data = load(file).to_dict()
        data.pop("__file__", None)
        return cls.from_dict(data, source=f"Search space '{file}'")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.params}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The values of one trial, drawn from an ``optuna.Trial``."""
        return {p.name: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """The grid for ``optuna.samplers.GridSampler``."""
        return {p.name: p.grid() for p in self.params}

    def check(self, cfg: Mapping[str, Any]) -> None:
        """Raise when a searched key is not in ``cfg`` (a typo would otherwise be ignored)."""
        leaves = {k: v for k, v in _leaves(cfg) if k != "__file__"}
        for name in self.names:
            if name not in leaves:
                raise TuneError(
                    f"{self.source}: '{name}' is not a key of the config. Add it to the config "
                    f"(with a default value) or fix the name." + did_you_mean(name, list(leaves))
                )

    def apply(self, cfg: Mapping[str, Any], values: Mapping[str, Any]) -> Config:
        """A copy of ``cfg`` with each dotted key set to its value."""
        return apply_values(cfg, values)

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(self.names)})"


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        yield name, value
        if isinstance(value, Mapping):
            yield from _leaves(value, name + ".")


def apply_values(cfg: Mapping[str, Any], values: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with each dotted key of ``values`` set (``{"a.b": 1}`` sets ``a.b``)."""
    from forgeml.config._overrides import set_path

    out = Config(copy.deepcopy(dict(cfg)))
    for name, value in values.items():
        set_path(out, name.split("."), value)
    return out


def object_def(node: Any) -> ObjectDef:
    """The :class:`~forgeml.objects.ObjectDef` a config node describes.

    A node is ``{cls: "package.module:Class", args: [...], params: {...}}`` (``args``
    and ``params`` optional; ``kwargs`` is accepted for ``params``), so a search space
    reaches constructor arguments as ``model.params.hidden``. An ObjectDef passes
    through. Values that are such nodes themselves become nested ObjectDefs.
    """
    if isinstance(node, ObjectDef):
        return node
    if not isinstance(node, Mapping) or "cls" not in node:
        raise TuneError(
            f"An object definition in a config is a mapping with 'cls' ('package.module:Class') "
            f"and optional 'args' and 'params'. Got {node!r}."
        )
    unknown = sorted(set(map(str, node)) - {"cls", "args", "params", "kwargs"})
    if unknown:
        raise TuneError(
            f"Object definition {node.get('cls')!r} has unknown key(s) {', '.join(unknown)}. "
            f"Known: cls, args, params." + did_you_mean(unknown[0], ("cls", "args", "params"))
        )
    params = node.get("params", node.get("kwargs")) or {}
    args = node.get("args") or []
    if not isinstance(params, Mapping) or not isinstance(args, list | tuple):
        raise TuneError(
            f"Object definition {node['cls']!r}: 'params' must be a mapping and 'args' a list. "
            f"Got params={params!r}, args={args!r}."
        )

    def value(v: Any) -> Any:
        if (
            isinstance(v, Mapping)
            and "cls" in v
            and set(map(str, v))
            <= {
                "cls",
                "args",
                "params",
                "kwargs",
            }
        ):
            return object_def(v)
        if isinstance(v, Mapping):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    return ObjectDef(
        str(node["cls"]), *[value(a) for a in args], **{str(k): value(v) for k, v in params.items()}
    )
