"""Agents: one per framework, each loads a manifest's model onto a device and predicts.

``get_agent("pytorch")`` returns the agent registered under that name (or an
alias: ``torch``, ``keras``, ``onnx``, ...). The built-in agents are thin
layers over the framework adapters (:class:`FrameworkAgent`); write your own by
subclassing it, or implement the :class:`forgeml.eval.Agent` protocol, and
register it with ``forgeml.eval.AGENTS.register`` or the entry-point group
``forgeml.agent``.
"""

from forgeml._core._errors import EvalError, RegistryError
from forgeml.eval._protocols import Agent
from forgeml.eval.agents._base import AdapterPredictor, FrameworkAgent, normalize_device


def get_agent(name: str) -> Agent:
    """The agent registered as ``name``; an unknown name lists the known ones."""
    from forgeml.eval._registries import AGENTS

    try:
        agent: Agent = AGENTS.load(name)
    except RegistryError as exc:
        raise EvalError(str(exc)) from None
    return agent


__all__ = ["AdapterPredictor", "FrameworkAgent", "get_agent", "normalize_device"]
