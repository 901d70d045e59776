"""Seeding every random generator a run may use, including frameworks imported later."""

from __future__ import annotations

import logging
import os
import random
from types import ModuleType

import numpy as np

from forgeml._core._lazy import when_imported
from forgeml.frameworks import FRAMEWORKS, Seedable, get_adapter

log = logging.getLogger("forgeml.app")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed ``random``, numpy and every framework, now or as soon as it is imported.

    With ``deterministic``, the frameworks' deterministic modes are turned on too.
    Frameworks that the program never imports cost nothing.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        from forgeml._core._errors import AppError

        raise AppError(f"The seed must be a non-negative integer. Got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    for name in FRAMEWORKS.names():

        def seed_framework(_: ModuleType, name: str = name) -> None:
            adapter = get_adapter(name)
            if not isinstance(adapter, Seedable):
                return
            adapter.seed(seed, deterministic)
            log.debug("seeded %s with %d (deterministic=%s)", name, seed, deterministic)

        when_imported(name, seed_framework, key="forgeml.seed")
