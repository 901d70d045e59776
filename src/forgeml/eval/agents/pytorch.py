"""The ``pytorch`` agent (alias ``torch``): a ``torch.nn.Module`` from a forgeml archive.

The module runs in eval mode under ``torch.inference_mode`` on ``cpu`` or
``cuda:N``; ``threads`` calls ``torch.set_num_threads`` (process-wide).
"""

from __future__ import annotations

from forgeml.eval.agents._base import FrameworkAgent


class PyTorchAgent(FrameworkAgent):
    name = "pytorch"
    framework = "pytorch"
    adapter_name = "torch"
    packages = ("torch",)
    runs = "a torch.nn.Module"


agent = PyTorchAgent()
