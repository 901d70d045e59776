"""Export models to TorchScript, ONNX and TensorRT, and check every export.

:func:`export` exports a model by name (its manifest) to a target format,
checks the export against the original on a batch of held-out data (outputs
within a tolerance, and a latency comparison), writes it only when it passes,
registers it as a manifest of its own (``$FORGEML_HOME/models``) and records it
(``<output>.json`` and the results database). :func:`export_model` exports a
model object. Exporters are registered per ``"<source>-><target>"`` in
:data:`EXPORTERS`; third parties add theirs through the entry-point group
``forgeml.exporters``.
"""

from forgeml._core._errors import ExportError
from forgeml.export._export import (
    ExportResult,
    canonical_target,
    default_tolerance,
    export,
    export_model,
    get_exporter,
    register_manifest,
    select_source,
    variant_manifest,
)
from forgeml.export._parity import (
    LatencyComparison,
    Parity,
    check_parity,
    median_latency,
)
from forgeml.export._protocol import (
    EXPORTERS,
    TOLERANCES,
    Exporter,
    ExportOptions,
    ExportSource,
    exporter_key,
    targets,
)

__all__ = [
    "EXPORTERS",
    "TOLERANCES",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "ExportSource",
    "Exporter",
    "LatencyComparison",
    "Parity",
    "canonical_target",
    "check_parity",
    "default_tolerance",
    "export",
    "export_model",
    "exporter_key",
    "get_exporter",
    "median_latency",
    "register_manifest",
    "select_source",
    "targets",
    "variant_manifest",
]
