"""Framework adapters, one module each, loaded by name through a registry.

A framework's registry name is the name of the module it wraps. Only the
modules in this package import ML frameworks, and only when an
adapter is first loaded. Third parties add adapters through the entry-point
group ``forgeml.frameworks``.
"""

from forgeml._core._registry import Registry
from forgeml.frameworks._protocol import FrameworkAdapter

FRAMEWORKS = Registry("frameworks")
FRAMEWORKS.register(
    "torch",
    "forgeml.frameworks.torch:adapter",
    hint="pip install 'forgeml[torch]' (torch==2.13.0)",
    aliases=("pytorch",),
)
FRAMEWORKS.register(
    "tensorflow",
    "forgeml.frameworks.tensorflow:adapter",
    hint="pip install 'forgeml[tensorflow]'",
    aliases=("tf",),
)


def get_adapter(name: str) -> FrameworkAdapter:
    """The adapter registered as ``name`` (imports its framework)."""
    adapter: FrameworkAdapter = FRAMEWORKS.load(name)
    return adapter


__all__ = ["FRAMEWORKS", "FrameworkAdapter", "get_adapter"]
