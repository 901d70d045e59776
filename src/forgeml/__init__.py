"""forgeml: from a YAML-configured experiment to a profiled, exported, served model.

``import forgeml`` is cheap: it imports no ML framework. Subpackages
(``forgeml.config``, ``forgeml.app``, ...) load when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forgeml._core._errors import (
    AppError,
    ArgumentError,
    CLIError,
    ConfigError,
    ContextChildError,
    ContextError,
    ContextIncompatibilityError,
    ContextResourceError,
    DataError,
    EvalError,
    ExportError,
    ForgeMLError,
    FormatError,
    HubError,
    JobsError,
    NotifyError,
    ObjectError,
    PackageError,
    RegistryError,
    SecretsError,
    ServeError,
    StoreError,
    TemplateError,
    TraceError,
    TrackError,
    TrainError,
    TuneError,
)
from forgeml._version import __version__

if TYPE_CHECKING:
    from forgeml.config import Config
    from forgeml.objects import Object, ObjectDef, Repo, Selector, load_object, save_object

__all__ = [
    "AppError",
    "ArgumentError",
    "CLIError",
    "Config",
    "ConfigError",
    "ContextChildError",
    "ContextError",
    "ContextIncompatibilityError",
    "ContextResourceError",
    "DataError",
    "EvalError",
    "ExportError",
    "ForgeMLError",
    "FormatError",
    "HubError",
    "JobsError",
    "NotifyError",
    "Object",
    "ObjectDef",
    "ObjectError",
    "PackageError",
    "RegistryError",
    "Repo",
    "SecretsError",
    "Selector",
    "ServeError",
    "StoreError",
    "TemplateError",
    "TraceError",
    "TrackError",
    "TrainError",
    "TuneError",
    "__version__",
    "load_object",
    "save_object",
]

_LAZY = {
    "Config": "forgeml.config",
    "Object": "forgeml.objects",
    "ObjectDef": "forgeml.objects",
    "Repo": "forgeml.objects",
    "Selector": "forgeml.objects",
    "load_object": "forgeml.objects",
    "save_object": "forgeml.objects",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forgeml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
