"""Evaluate any model on any framework: manifests, agents, tasks, runner, results.

Agents (one per framework) load a manifest's model and predict on a batch;
tasks read datasets, pre- and post-process, and score. Both are registries:
third parties add more through the entry-point groups ``forgeml.agent`` and
``forgeml.task``. :func:`resolve_weights` turns a manifest's weights into a
verified local file; the built-in zoo (:mod:`forgeml.eval.zoo`) trains its
models on bundled datasets the first time they are needed (:func:`build_zoo`).
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
from forgeml.eval._matrix import (
    MatrixEntry,
    MatrixOutcome,
    MatrixRun,
    MatrixSpec,
    load_matrix,
    run_matrix,
)
from forgeml.eval._protocols import Agent, Batch, EvalData, Metrics, Predictor, Task
from forgeml.eval._registries import AGENTS, TASKS
from forgeml.eval._remote import HTTPPredictor
from forgeml.eval._report import render_report, write_report
from forgeml.eval._results import Comparison, ResultsDB, compare, results_path
from forgeml.eval._runner import EvalResult, evaluate
from forgeml.eval._scenarios import (
    SCENARIOS,
    ScenarioResult,
    ScenarioSettings,
    early_stopping_estimate,
    find_peak,
    run_scenario,
)
from forgeml.eval._stats import LatencyStats
from forgeml.eval._weights import ZooBuild, build_zoo, resolve_weights, zoo_build

__all__ = [
    "AGENTS",
    "BUNDLED",
    "FRAMEWORK_NAMES",
    "SCENARIOS",
    "TASKS",
    "Agent",
    "Batch",
    "Comparison",
    "EvalData",
    "EvalError",
    "EvalResult",
    "HTTPPredictor",
    "InputSpec",
    "LatencyStats",
    "Manifest",
    "MatrixEntry",
    "MatrixOutcome",
    "MatrixRun",
    "MatrixSpec",
    "Metrics",
    "OutputSpec",
    "Predictor",
    "ResultsDB",
    "ScenarioResult",
    "ScenarioSettings",
    "Task",
    "WeightsSpec",
    "ZooBuild",
    "build_zoo",
    "canonical_framework",
    "compare",
    "dump_manifest",
    "early_stopping_estimate",
    "evaluate",
    "find_manifests",
    "find_peak",
    "get_manifest",
    "load_bundled",
    "load_manifest",
    "load_matrix",
    "manifest_dirs",
    "parse_manifest",
    "render_report",
    "resolve_weights",
    "results_path",
    "run_matrix",
    "run_scenario",
    "write_report",
    "zoo_build",
]
