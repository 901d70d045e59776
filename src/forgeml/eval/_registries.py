"""The agent and task registries (short name -> module; loaded when first used)."""

from __future__ import annotations

from forgeml._core._registry import Registry

AGENTS = Registry("agent")
AGENTS.register(
    "pytorch",
    "forgeml.eval.agents.pytorch:agent",
    hint="pip install 'forgeml[torch]'",
    aliases=("torch",),
)
AGENTS.register(
    "torchscript",
    "forgeml.eval.agents.pytorch:torchscript_agent",
    hint="pip install 'forgeml[torch]'",
)
AGENTS.register(
    "onnxruntime",
    "forgeml.eval.agents.onnxruntime:agent",
    hint="pip install 'forgeml[onnx]'",
    aliases=("onnx", "ort"),
)
AGENTS.register(
    "sklearn", "forgeml.eval.agents.sklearn:agent", hint="pip install 'forgeml[sklearn]'"
)
AGENTS.register(
    "xgboost", "forgeml.eval.agents.xgboost:agent", hint="pip install 'forgeml[xgboost]'"
)
AGENTS.register(
    "tensorflow",
    "forgeml.eval.agents.tensorflow:agent",
    hint="pip install 'forgeml[tensorflow]'",
    aliases=("keras", "tf"),
)
AGENTS.register(
    "tensorrt",
    "forgeml.eval.agents.tensorrt:agent",
    hint="TensorRT needs an NVIDIA GPU and the tensorrt package",
    aliases=("trt",),
)

TASKS = Registry("task")
TASKS.register("image_classification", "forgeml.eval.tasks.image_classification:task")
TASKS.register("tabular_classification", "forgeml.eval.tasks.tabular_classification:task")
TASKS.register("tabular_regression", "forgeml.eval.tasks.tabular_regression:task")
