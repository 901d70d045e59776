"""The small protocol every framework adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class FrameworkAdapter(Protocol):
    """What forgeml needs from a framework; everything else is built on these methods."""

    #: the short name in the registry, e.g. ``"torch"``
    name: str
    #: the importable module the adapter wraps, e.g. ``"torch"``
    module: str

    def seed(self, seed: int, deterministic: bool = False) -> None:
        """Seed the framework's random generators; optionally turn on deterministic kernels."""
        ...
