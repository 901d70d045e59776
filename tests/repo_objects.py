"""Objects for the Repo tests, importable by worker processes started with spawn."""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeml.objects import Archive, Object, Repo


class Point(Object):
    def __init__(self, x: Any, y: Any = 0, **extra: Any) -> None:
        self.x = x
        self.y = y


class Point3(Point):
    def __init__(self, x: Any, y: Any = 0, z: Any = 0) -> None:
        super().__init__(x, y)
        self.z = z


class Pair(Object):
    def __init__(self, first: Any, second: Any = None, lr: float = 0.1) -> None:
        self.first = first
        self.second = second
        self.lr = lr


class Weights(Object):
    """State that is not a constructor argument: saved by the archive hooks."""

    def __init__(self, size: int) -> None:
        self.w = np.zeros(size)

    def save_object_imp(self, archive: Archive) -> None:
        archive.write_bytes("w.bin", self.w.astype("<f8").tobytes())

    def load_object_imp(self, archive: Archive) -> None:
        self.w = np.frombuffer(archive.read_bytes("w.bin"), dtype="<f8").copy()


def add_points(directory: str, worker: int, count: int, start: Any = None) -> None:
    """A writer process: open (maybe create) the repo and add ``count`` objects.

    ``start`` (a barrier) makes every writer begin at once, creation included.
    """
    if start is not None:
        start.wait(30)
    repo = Repo(directory, create=True)
    for i in range(count):
        repo.add_object(Point(worker, i), tags=[f"worker{worker}"])
    repo.close()
