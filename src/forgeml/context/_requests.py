"""Resource requests ``{framework: {resource: amount}}`` and the allocations that grant them.

A request names the frameworks a function needs and, for each, the resources
it needs: a share of one device (``"gpu/0": 0.5``, ``"cpu/1": 1.0``) or a number
of whole devices (``"num_gpus": 2``, ``"num_cpus": 1``). ``{"torch": {}}``
asks for torch on the CPU and no particular resource. ``"default"`` names no
framework: a plain Python process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from forgeml._core._errors import (
    ContextError,
    ContextIncompatibilityError,
    RegistryError,
    did_you_mean,
)

#: The framework name that needs no framework: any context satisfies it.
DEFAULT = "default"
#: Keys that ask for a number of whole devices of a kind.
COUNT_KEYS = {"num_cpus": "cpu", "num_gpus": "gpu"}
_DEVICE_KEY = re.compile(r"^(cpu|gpu)/(\d+)$")
#: Shares are compared and added with this many decimals (0.1 + 0.2 == 0.3).
DECIMALS = 9

Request = dict[str, dict[str, float]]


def device_key(key: str) -> tuple[str, int] | None:
    """``("gpu", 0)`` for ``"gpu/0"``; None for anything else."""
    match = _DEVICE_KEY.match(key)
    return (match.group(1), int(match.group(2))) if match else None


def framework_name(name: object) -> str:
    """The registry name of a framework (``"tf"`` -> ``"tensorflow"``), or ``"default"``."""
    from forgeml.frameworks import FRAMEWORKS

    if not isinstance(name, str):
        raise ContextError(
            f"A context request maps framework names to resources; got the key {name!r} "
            f"({type(name).__name__}). Use e.g. {{'torch': {{'gpu/0': 0.5}}}}."
        )
    if name == DEFAULT:
        return name
    try:
        return FRAMEWORKS.canonical(name)
    except RegistryError:
        known = [DEFAULT, *FRAMEWORKS.names()]
        aliases = [a for n in FRAMEWORKS.names() for a in FRAMEWORKS.entry(n).aliases]
        raise ContextError(
            f"Unknown framework {name!r} in a context request. Known: {', '.join(known)} "
            f"(aliases: {', '.join(aliases)})." + did_you_mean(name, [*known, *aliases])
        ) from None


def normalize(reqs: Mapping[str, Mapping[str, Any] | None] | None) -> Request:
    """A checked copy of a request: canonical framework names, float shares, int counts.

    ``None`` is ``{"default": {}}``. Raises :class:`ContextError` naming what is wrong.
    """
    if reqs is None:
        return {DEFAULT: {}}
    if not isinstance(reqs, Mapping):
        raise ContextError(
            f"A context request must be a dict of framework -> resources, e.g. "
            f"{{'torch': {{'gpu/0': 0.5}}, 'tf': {{}}}}. Got {type(reqs).__name__}: {reqs!r:.80}."
        )
    if not reqs:
        return {DEFAULT: {}}
    result: Request = {}
    for raw_name, resources in reqs.items():
        name = framework_name(raw_name)
        merged = result.setdefault(name, {})
        if resources is None:
            continue
        if not isinstance(resources, Mapping):
            raise ContextError(
                f"The resources of {raw_name!r} must be a dict such as {{'gpu/0': 0.5}} or "
                f"{{}} (none in particular). Got {type(resources).__name__}: {resources!r:.80}."
            )
        for key, amount in resources.items():
            merged[key] = _amount(raw_name, key, amount)
    return result


def _amount(framework: str, key: object, amount: object) -> float:
    if not isinstance(key, str) or (key not in COUNT_KEYS and device_key(key) is None):
        raise ContextError(
            f"Unknown resource {key!r} for {framework!r}. Use 'cpu/N' or 'gpu/N' with a "
            f"share in (0, 1] (e.g. 'gpu/0': 0.5), or 'num_cpus' / 'num_gpus' with a count."
            + (did_you_mean(key, ["num_cpus", "num_gpus"]) if isinstance(key, str) else "")
        )
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ContextError(
            f"The amount of {key!r} for {framework!r} must be a number. Got {amount!r}."
        )
    if key in COUNT_KEYS:
        if amount != int(amount) or amount < 0:
            raise ContextError(
                f"{key!r} for {framework!r} is a number of whole devices: a non-negative "
                f"integer. Got {amount!r}. Ask for part of a device with "
                f"'{COUNT_KEYS[key]}/N': share."
            )
        return float(int(amount))
    if not (math.isfinite(amount) and 0 < amount <= 1):
        raise ContextError(
            f"The share of {key!r} for {framework!r} must be in (0, 1] (1.0 is the whole "
            f"device). Got {amount!r}."
        )
    return round(float(amount), DECIMALS)


@dataclass(frozen=True)
class Allocation:
    """Resources granted to a context: ``{framework: {"cpu/N" | "gpu/N": share}}``.

    A :class:`ResourcePool` returns one from ``request`` and takes it back in
    ``release``; inside a compute context, :func:`current_context` returns the
    one the context runs under.
    """

    resources: Mapping[str, Mapping[str, float]]
    #: a number unique within the pool that granted it (0 for a context's own copy)
    id: int = field(default=0, compare=False)

    @property
    def frameworks(self) -> tuple[str, ...]:
        """The frameworks of the context, sorted (``"default"`` included when asked for)."""
        return tuple(sorted(self.resources))

    def _devices(self, kind: str) -> dict[int, float]:
        totals: dict[int, float] = {}
        for resources in self.resources.values():
            for key, share in resources.items():
                parsed = device_key(key)
                if parsed is not None and parsed[0] == kind:
                    totals[parsed[1]] = round(totals.get(parsed[1], 0.0) + share, DECIMALS)
        return dict(sorted(totals.items()))

    @property
    def cpus(self) -> dict[int, float]:
        """CPU index -> share granted, over all frameworks."""
        return self._devices("cpu")

    @property
    def gpus(self) -> dict[int, float]:
        """GPU index (in the pool) -> share granted, over all frameworks."""
        return self._devices("gpu")

    def shares(self, framework: str, kind: str = "gpu") -> dict[int, float]:
        """Device index -> share granted to one framework."""
        name = framework_name(framework)
        out: dict[int, float] = {}
        for key, share in self.resources.get(name, {}).items():
            parsed = device_key(key)
            if parsed is not None and parsed[0] == kind:
                out[parsed[1]] = share
        return dict(sorted(out.items()))

    def missing(self, reqs: Mapping[str, Mapping[str, Any] | None] | None) -> list[str]:
        """What this allocation lacks to satisfy ``reqs`` (empty when it satisfies it)."""
        problems: list[str] = []
        for name, wanted in normalize(reqs).items():
            if name == DEFAULT:
                continue
            if name not in self.resources:
                problems.append(f"{name} is not part of it")
                continue
            granted = self.resources[name]
            for key, amount in wanted.items():
                if key in COUNT_KEYS:
                    have = len(self.shares(name, COUNT_KEYS[key]))
                    if have < amount:
                        problems.append(f"{name} asks for {key}={int(amount)}, it has {have}")
                elif granted.get(key, 0.0) + 10**-DECIMALS < amount:
                    problems.append(
                        f"{name} asks for {key}: {amount:g}, it has {granted.get(key, 0.0):g}"
                    )
        return problems

    def satisfies(self, reqs: Mapping[str, Mapping[str, Any] | None] | None) -> bool:
        """True when a context with these resources can run what ``reqs`` asks for."""
        return not self.missing(reqs)

    def check(self, reqs: Mapping[str, Mapping[str, Any] | None] | None) -> None:
        """Raise :class:`ContextIncompatibilityError` unless this satisfies ``reqs``."""
        problems = self.missing(reqs)
        if problems:
            raise ContextIncompatibilityError(
                f"The active compute context does not satisfy the request {dict(reqs or {})!r}: "
                f"{'; '.join(problems)}. The context has {self.describe()}. Run the code in a "
                f"compute context that asks for it (compute_context(ctx_context_reqs=...) or "
                f"call_context_reqs=...)."
            )

    def describe(self) -> str:
        """``"torch (gpu/0: 0.5), tensorflow (no devices)"``."""
        parts = []
        for name in self.frameworks:
            granted = self.resources[name]
            inner = ", ".join(f"{k}: {v:g}" for k, v in sorted(granted.items())) or "no devices"
            parts.append(f"{name} ({inner})")
        return ", ".join(parts) or "no frameworks"

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: dict(res) for name, res in self.resources.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> Allocation:
        return cls({str(k): {str(r): float(s) for r, s in v.items()} for k, v in data.items()})


def describe_request(reqs: Request, frameworks: Iterable[str] | None = None) -> str:
    names = sorted(reqs) if frameworks is None else list(frameworks)
    return ", ".join(
        f"{n} ({', '.join(f'{k}: {v:g}' for k, v in sorted(reqs[n].items())) or 'no devices'})"
        for n in names
    )
