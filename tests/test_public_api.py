"""Every public package re-exports its names in a sorted, complete ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import forgeml


def public_packages() -> list[str]:
    names = ["forgeml"]
    for info in pkgutil.walk_packages(forgeml.__path__, "forgeml."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def test_the_packages_are_found() -> None:
    assert {"forgeml.config", "forgeml.argparse", "forgeml.app", "forgeml.cli"} <= set(
        public_packages()
    )


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then everything else, each sorted."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def _defined_in(module: str, package: str) -> bool:
    # Public errors report their module as "forgeml" (so tracebacks read forgeml.ConfigError).
    if package == "forgeml":
        return module == "forgeml" or module.startswith("forgeml.")
    return module.startswith(f"{package}.")


@pytest.mark.parametrize("name", public_packages())
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=isort_key), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    for attr in exported:
        assert getattr(module, attr, None) is not None, f"{name}.{attr} is in __all__ but missing"
    # Complete: every public class, function or registry that the package itself
    # defines (in its private modules) is exported.
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and _defined_in(getattr(value, "__module__", None) or "", name)
    }
    missing = public - set(exported)
    assert not missing, f"{name} defines public names missing from __all__: {sorted(missing)}"


def test_errors_share_one_root() -> None:
    errors = [
        value
        for value in vars(forgeml).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(errors) >= 5
    for error in errors:
        assert issubclass(error, forgeml.ForgeMLError)


def test_lazy_attribute_and_unknown_attribute() -> None:
    assert forgeml.Config.__name__ == "Config"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = forgeml.Nope  # type: ignore[attr-defined]
