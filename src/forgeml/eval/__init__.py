"""Evaluate any model on any framework: manifests, agents, tasks, runner, results.

Agents (one per framework) load a manifest's model and predict on a batch;
tasks read datasets, pre- and post-process, and score. Both are registries:
third parties add more through the entry-point groups ``forgeml.agent`` and
``forgeml.task``.
"""

from forgeml._core._errors import EvalError
from forgeml.eval._bundled import BUNDLED, load_bundled
from forgeml.eval._manifest import (
    FRAMEWORK_NAMES,
    InputSpec,
    Manifest,
    OutputSpec,
    WeightsSpec,
    canonical_framework,
    dump_manifest,
    find_manifests,
    get_manifest,
    load_manifest,
    manifest_dirs,
    parse_manifest,
)
from forgeml.eval._protocols import Agent, Batch, EvalData, Metrics, Predictor, Task
from forgeml.eval._registries import AGENTS, TASKS

__all__ = [
    "AGENTS",
    "BUNDLED",
    "FRAMEWORK_NAMES",
    "TASKS",
    "Agent",
    "Batch",
    "EvalData",
    "EvalError",
    "InputSpec",
    "Manifest",
    "Metrics",
    "OutputSpec",
    "Predictor",
    "Task",
    "WeightsSpec",
    "canonical_framework",
    "dump_manifest",
    "find_manifests",
    "get_manifest",
    "load_bundled",
    "load_manifest",
    "manifest_dirs",
    "parse_manifest",
]
