"""A pool of CPUs and GPUs (or shares of them) that grants and takes back requests."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from forgeml._core._errors import ContextError, ContextResourceError
from forgeml.context._requests import (
    COUNT_KEYS,
    DECIMALS,
    Allocation,
    Request,
    device_key,
    normalize,
)

_EPSILON = 10**-DECIMALS


def machine_cpus() -> list[int]:
    """The OS ids of the CPUs this process may run on (its affinity), sorted: pool CPU
    index i is the i-th of them, as pool GPU index i is the i-th visible GPU."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _devices(kind: str, spec: Any) -> dict[int, float]:
    """``{index: capacity}`` from a count, an iterable of indices or a mapping."""
    if isinstance(spec, bool):
        raise ContextError(f"{kind}s= takes a count, indices or {{index: capacity}}. Got {spec!r}.")
    if isinstance(spec, int):
        if spec < 0:
            raise ContextError(f"{kind}s= must not be negative. Got {spec}.")
        return dict.fromkeys(range(spec), 1.0)
    items = spec.items() if isinstance(spec, Mapping) else ((i, 1.0) for i in spec)
    out: dict[int, float] = {}
    for index, capacity in items:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ContextError(f"{kind} indices must be non-negative integers. Got {index!r}.")
        if isinstance(capacity, bool) or not isinstance(capacity, int | float) or capacity <= 0:
            raise ContextError(
                f"The capacity of {kind}/{index} must be a positive number (1.0: the whole "
                f"device). Got {capacity!r}."
            )
        out[index] = round(float(capacity), DECIMALS)
    return dict(sorted(out.items()))


class ResourcePool:
    """CPUs and GPUs that compute contexts are granted shares of.

    >>> pool = ResourcePool(cpus=2, gpus={0: 1.0})
    >>> first = pool.request({"torch": {"gpu/0": 0.5}})
    >>> second = pool.request({"torch": {"gpu/0": 0.5}})
    >>> pool.available["gpu/0"]
    0.0
    >>> pool.release(first); pool.release(second)
    >>> pool.available["gpu/0"]
    1.0

    ``cpus`` and ``gpus`` take a count, a list of indices or ``{index: capacity}``;
    by default as many CPUs as this process may run on (its affinity) and the NVIDIA
    GPUs it can see. Indices are positions, not OS ids: ``cpu/i`` is the i-th CPU of
    this process's affinity (sorted), ``gpu/i`` the i-th GPU it sees (its
    ``CUDA_VISIBLE_DEVICES``), so ``ResourcePool(cpus=4)`` on a process pinned to CPUs
    8-11 means those four. Declaring resources is bookkeeping only: a compute context
    still runs on the machine it is on. The pool is thread-safe.
    """

    def __init__(
        self,
        cpus: int | Iterable[int] | Mapping[int, float] | None = None,
        gpus: int | Iterable[int] | Mapping[int, float] | None = None,
    ) -> None:
        from forgeml._core._env import nvidia_gpu_count

        self._capacity: dict[str, float] = {}
        for kind, spec in (
            ("cpu", len(machine_cpus()) if cpus is None else cpus),
            ("gpu", nvidia_gpu_count() if gpus is None else gpus),
        ):
            for index, capacity in _devices(kind, spec).items():
                self._capacity[f"{kind}/{index}"] = capacity
        self._free = dict(self._capacity)
        self._granted: dict[int, Allocation] = {}
        self._ids = itertools.count(1)
        self._changed = threading.Condition()

    @property
    def capacity(self) -> dict[str, float]:
        """Every resource and its capacity: ``{"cpu/0": 1.0, ..., "gpu/0": 1.0}``."""
        return dict(self._capacity)

    @property
    def available(self) -> dict[str, float]:
        """Every resource and the share of it not granted now."""
        with self._changed:
            return dict(self._free)

    @property
    def allocations(self) -> list[Allocation]:
        """The allocations granted and not yet released."""
        with self._changed:
            return list(self._granted.values())

    def request(
        self, reqs: Mapping[str, Mapping[str, Any] | None] | None, *, timeout: float | None = 0
    ) -> Allocation:
        """Grant ``reqs`` (``{framework: {resource: amount}}``) and return the allocation.

        Raises :class:`ContextResourceError` when the pool cannot grant it: at once
        when it never could (more than the pool has, even with nothing else granted:
        all parts of the request count together), else after waiting up to
        ``timeout`` seconds for other allocations to be released (``None``: wait forever).
        """
        wanted = normalize(reqs)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        with self._changed:
            _, never = self._plan(wanted, self._capacity, never=True)
            if never:  # not even an empty pool could grant it: waiting would be forever
                raise ContextResourceError(never)
            while True:
                plan, problem = self._plan(wanted, self._free, never=False)
                if plan is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ContextResourceError(problem)
                self._changed.wait(remaining)
            for resources in plan.values():
                for key, share in resources.items():
                    self._free[key] = round(self._free[key] - share, DECIMALS)
            allocation = Allocation(plan, id=next(self._ids))
            self._granted[allocation.id] = allocation
            return allocation

    def release(self, allocation: Allocation) -> None:
        """Give an allocation's resources back to the pool (once)."""
        with self._changed:
            if self._granted.pop(allocation.id, None) is None:
                raise ContextError(
                    f"Allocation {allocation.id} ({allocation.describe()}) is not held by this "
                    f"pool: it was released already, or another pool granted it."
                )
            for resources in allocation.resources.values():
                for key, share in resources.items():
                    self._free[key] = min(
                        self._capacity[key], round(self._free[key] + share, DECIMALS)
                    )
            self._changed.notify_all()

    # -- planning -----------------------------------------------------------------------------

    def _plan(
        self, wanted: Request, available: Mapping[str, float], *, never: bool
    ) -> tuple[dict[str, dict[str, float]] | None, str]:
        """(the grant of ``wanted`` from ``available``, or None and why not).

        Shares of named devices are planned first, for every framework of the request,
        then the counts (``num_gpus``), which take whole devices that no part of the
        request names and that are wholly available. Planned against the full capacity
        (``never``), a failure means the pool can never grant the request.
        """
        free = dict(available)
        plan: dict[str, dict[str, float]] = {name: {} for name in wanted}
        for name, resources in wanted.items():
            for key, share in resources.items():
                if key in COUNT_KEYS:
                    continue
                if key not in self._capacity:
                    return None, self._no_such(name, key)
                if sum(p.get(key, 0.0) for p in plan.values()) + share > self._capacity[key] + (
                    _EPSILON
                ):
                    return None, self._too_much(name, key, share, in_all=True)
                if free[key] + _EPSILON < share:
                    return None, self._too_much(name, key, share, in_all=False)
                free[key] = round(free[key] - share, DECIMALS)
                plan[name][key] = round(share, DECIMALS)
        for name, resources in wanted.items():
            for count_key, kind in COUNT_KEYS.items():
                count = int(resources.get(count_key, 0))
                if not count:
                    continue
                devices = [k for k in self._capacity if k.startswith(f"{kind}/")]
                claimed = {k for p in plan.values() for k in p if k.startswith(f"{kind}/")}
                whole = [
                    k
                    for k in devices
                    if k not in claimed and free[k] + _EPSILON >= self._capacity[k]
                ]
                if len(whole) < count:
                    if never:
                        return None, self._never_enough(name, count_key, count, devices, claimed)
                    return None, self._too_few(name, count_key, count, whole, devices)
                for key in whole[:count]:
                    plan[name][key] = self._capacity[key]
                    free[key] = 0.0
        return plan, ""

    def _summary(self) -> str:
        return ", ".join(f"{k}: {v:g} of {self._capacity[k]:g}" for k, v in self._free.items())

    def _no_such(self, name: str, key: str) -> str:
        parsed = device_key(key)
        kind = parsed[0] if parsed else "device"
        have = [k for k in self._capacity if k.startswith(f"{kind}/")]
        hint = (
            " No GPU is visible to this process (no NVIDIA driver, or CUDA_VISIBLE_DEVICES "
            "hides them); ask for CPUs instead, or run on a machine with a GPU."
            if kind == "gpu" and not have
            else ""
        )
        return (
            f"Cannot grant {key} to {name}: this pool has no {key}. Its {kind}s: "
            f"{', '.join(have) or '(none)'}.{hint}"
        )

    def _too_much(self, name: str, key: str, share: float, *, in_all: bool) -> str:
        if in_all:
            return (
                f"Cannot grant {key}: {share:g} to {name}: the request asks for more of {key} "
                f"than the pool has ({self._capacity[key]:g}). Ask for a smaller share."
            )
        return (
            f"Cannot grant {key}: {share:g} to {name}: only {self._free[key]:g} of {key} is "
            f"free ({len(self._granted)} allocation(s) hold the rest). Free now: "
            f"{self._summary()}. Release an allocation, ask for less, or wait for one "
            f"(timeout=)."
        )

    def _never_enough(
        self, name: str, key: str, count: int, devices: list[str], claimed: set[str]
    ) -> str:
        kind = COUNT_KEYS[key]
        others = (
            f", and the other parts of this request already take {', '.join(sorted(claimed))}"
            if claimed
            else ""
        )
        return (
            f"Cannot grant {key}={count} to {name}: the pool has {len(devices)} {kind}(s) "
            f"({', '.join(devices) or 'none'}){others}; {key} takes whole {kind}s no other "
            f"part of the request uses, so it can never be granted. Ask for fewer, or for "
            f"shares of named {kind}s ('{kind}/N': share)."
        )

    def _too_few(
        self, name: str, key: str, count: int, whole: list[str], devices: list[str]
    ) -> str:
        kind = COUNT_KEYS[key]
        return (
            f"Cannot grant {key}={count} to {name}: {len(whole)} of the pool's {len(devices)} "
            f"{kind}s are wholly free ({', '.join(whole) or 'none'}). Free now: "
            f"{self._summary() or '(nothing)'}. Ask for fewer, or release an allocation first."
        )

    def __repr__(self) -> str:
        return f"ResourcePool({self._summary()})"


_default: ResourcePool | None = None
_default_lock = threading.Lock()


def default_pool() -> ResourcePool:
    """The pool ``compute_context`` uses unless given one: this process's CPUs and GPUs."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ResourcePool()
        return _default
