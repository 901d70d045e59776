"""Compute contexts: run a function in a child process under a resource request.

:func:`compute_context` decorates a function so each call runs in a fresh
process granted ``{framework: {resource: share}}`` from a :class:`ResourcePool`
(CPUs, GPUs, fractional GPU shares), pinned to those devices, each framework
limited to its share. Inside, :func:`context_check` raises
:class:`ContextIncompatibilityError` when the context does not satisfy a
request. Objects cross the process boundary as forgeml archives, never pickled
unless the caller trusts them.
"""

from forgeml._core._errors import (
    ContextChildError,
    ContextError,
    ContextIncompatibilityError,
    ContextResourceError,
)
from forgeml.context._context import compute_context, context_check, current_context
from forgeml.context._pool import ResourcePool, default_pool
from forgeml.context._requests import Allocation, normalize

__all__ = [
    "Allocation",
    "ContextChildError",
    "ContextError",
    "ContextIncompatibilityError",
    "ContextResourceError",
    "ResourcePool",
    "compute_context",
    "context_check",
    "current_context",
    "default_pool",
    "normalize",
]
