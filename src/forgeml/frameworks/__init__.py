"""Framework adapters, one module each, loaded by name through a registry.

A framework's registry name is the name of the module it wraps. Only the
modules in this package import ML frameworks, and only when an adapter is
first loaded. Third parties add adapters through the entry-point group
``forgeml.frameworks``.
"""

import sys

from forgeml._core._registry import Registry
from forgeml.frameworks._protocol import (
    FrameworkAdapter,
    InferenceAdapter,
    Seedable,
    StateAdapter,
)

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
FRAMEWORKS.register(
    "keras", "forgeml.frameworks.keras:adapter", hint="pip install 'forgeml[keras]'"
)
FRAMEWORKS.register(
    "sklearn",
    "forgeml.frameworks.sklearn:adapter",
    hint="pip install 'forgeml[sklearn]'",
    aliases=("scikit-learn",),
)
FRAMEWORKS.register(
    "xgboost", "forgeml.frameworks.xgboost:adapter", hint="pip install 'forgeml[xgboost]'"
)
FRAMEWORKS.register(
    "onnxruntime", "forgeml.frameworks.onnxruntime:adapter", hint="pip install 'forgeml[onnx]'"
)
FRAMEWORKS.register(
    "tensorrt",
    "forgeml.frameworks.tensorrt:adapter",
    hint="TensorRT needs an NVIDIA GPU: pip install tensorrt cuda-python",
)


def get_adapter(name: str) -> FrameworkAdapter:
    """The adapter registered as ``name`` (imports its framework)."""
    adapter: FrameworkAdapter = FRAMEWORKS.load(name)
    return adapter


def state_adapter_for(obj: object) -> StateAdapter | None:
    """The adapter that saves ``obj``'s state, or None; imports no framework that isn't loaded.

    An object can only belong to a framework that is already imported, so only
    those adapters are asked, and only when a class in ``obj``'s MRO comes from it.
    The most specific framework is asked first, in the order of ``obj``'s MRO: an
    ``XGBClassifier`` (also a scikit-learn estimator) goes to xgboost, and a Keras
    model on the torch backend (also a ``torch.nn.Module``) goes to keras.
    """
    names = set(FRAMEWORKS.names())
    asked: set[str] = set()
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in asked or root not in names or root not in sys.modules:
            continue
        asked.add(root)
        adapter = get_adapter(root)
        if isinstance(adapter, StateAdapter) and adapter.owns(obj):
            return adapter
    return None


__all__ = [
    "FRAMEWORKS",
    "FrameworkAdapter",
    "InferenceAdapter",
    "Seedable",
    "StateAdapter",
    "get_adapter",
    "state_adapter_for",
]
