"""Export a model by name (or manifest) and check the export; or export a model object.

:func:`export` loads the source model with its framework's agent, takes one
batch of the held-out data through the task's preprocessing, converts the
model with the exporter registered for ``source -> target``, loads the result
with the target's agent, and compares: the outputs (max abs/rel difference
against ``atol + rtol * |original|``) and the median latency of both on that
batch. Only a passing export reaches its output path (written atomically);
then it is registered as a manifest next to the source model's, described in
``<output>.json`` and recorded in the results database.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgeml._core._errors import (
    EvalError,
    ExportError,
    ForgeMLError,
    RegistryError,
    did_you_mean,
)
from forgeml._core._files import atomic_path, atomic_write_text
from forgeml._core._hashing import sha256_file
from forgeml.export._parity import LatencyComparison, Parity, check_parity, time_runs
from forgeml.export._protocol import (
    EXPORTERS,
    TOLERANCES,
    Exporter,
    ExportOptions,
    ExportSource,
    exporter_key,
    targets,
)

if TYPE_CHECKING:
    from forgeml.eval import Manifest, Predictor, Task

#: Other names of the targets.
TARGET_ALIASES = {"trt": "tensorrt", "ts": "torchscript", "jit": "torchscript"}
METHODS = ("trace", "script")
#: Samples read for INT8 calibration, at most.
CALIBRATION_SAMPLES = 512
#: The batch size of INT8 calibration batches, at most.
CALIBRATION_BATCH = 32


@dataclass
class ExportResult:
    """One export: what was exported to where, and how it compares with the original."""

    model: str
    source_framework: str
    target: str
    #: The manifest framework that runs the export (``onnxruntime``, ``torchscript``, ...).
    framework: str
    #: Its ``weights.format`` (``onnx``, ``torchscript``, ``engine``).
    format: str
    path: Path
    sha256: str
    size_bytes: int
    parity: Parity
    latency: LatencyComparison | None
    options: dict[str, Any]
    #: The data the validation batch came from.
    dataset: str | None = None
    device: str = "cpu"
    model_version: str = "1"
    #: What the exporter reports: opset, converter versions, engine cache key, ...
    info: dict[str, Any] = field(default_factory=dict)
    #: Seconds the whole export took (loading, converting, checking, timing).
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    #: The model name the export was registered under, and its manifest (None: not
    #: registered).
    registered_as: str | None = None
    manifest_path: Path | None = None
    #: The JSON record written next to the export (None: not written).
    record_path: Path | None = None
    created: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
    )
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "model_version": self.model_version,
            "source_framework": self.source_framework,
            "target": self.target,
            "framework": self.framework,
            "format": self.format,
            "path": str(self.path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "parity": self.parity.to_dict(),
            "latency": self.latency.to_dict() if self.latency is not None else None,
            "options": dict(self.options),
            "dataset": self.dataset,
            "device": self.device,
            "info": _plain(self.info),
            "seconds": self.seconds,
            "provenance": dict(self.provenance),
            "registered_as": self.registered_as,
            "manifest_path": str(self.manifest_path) if self.manifest_path else None,
            "record_path": str(self.record_path) if self.record_path else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportResult:
        latency = data.get("latency")
        return cls(
            id=str(data["id"]),
            created=str(data["created"]),
            model=str(data["model"]),
            model_version=str(data.get("model_version", "1")),
            source_framework=str(data["source_framework"]),
            target=str(data["target"]),
            framework=str(data["framework"]),
            format=str(data["format"]),
            path=Path(data["path"]),
            sha256=str(data["sha256"]),
            size_bytes=int(data["size_bytes"]),
            parity=Parity.from_dict(data["parity"]),
            latency=LatencyComparison.from_dict(latency) if latency else None,
            options=dict(data.get("options", {})),
            dataset=data.get("dataset"),
            device=str(data.get("device", "cpu")),
            info=dict(data.get("info", {})),
            seconds=float(data.get("seconds", 0.0)),
            provenance=dict(data.get("provenance", {})),
            registered_as=data.get("registered_as"),
            manifest_path=Path(data["manifest_path"]) if data.get("manifest_path") else None,
            record_path=Path(data["record_path"]) if data.get("record_path") else None,
        )

    def summary(self) -> str:
        """What ``forgeml export`` prints: where it went, parity, latency, registration."""
        details = [self.options.get("precision", "fp32")]
        if self.info.get("opset"):
            details.append(f"opset {self.info['opset']}")
        if self.target == "torchscript":
            details.append(str(self.options.get("method", "trace")))
        if self.target in ("onnx", "tensorrt"):
            dynamic = self.options.get("dynamic_batch", True)
            details.append("dynamic batch" if dynamic else "static batch")
        lines = [
            f"{self.model}: {self.source_framework} -> {self.target} ({', '.join(details)})",
            f"wrote    {self.path} ({_size(self.size_bytes)}, sha256 {self.sha256[:12]})",
            f"parity   {self.parity.describe()}: passed",
        ]
        if self.latency is not None:
            lines.append(f"latency  {self.latency.describe()}")
            if self.latency.noisy:
                lines.append(
                    "warning  the timings are noisy (a median far above the fastest run): "
                    "the machine is busy. Time again, or with --threads 1."
                )
        if self.manifest_path is not None:
            lines.append(
                f"model    {self.registered_as} ({self.framework}): {self.manifest_path}; "
                f"run it with forgeml eval --model_name {self.registered_as} --agent "
                f"{self.framework}"
            )
        if self.record_path is not None:
            lines.append(f"record   {self.record_path}")
        return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1 << 20 else f"{size / (1 << 20):.1f} MiB"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- choosing


def canonical_target(to: str) -> str:
    """A target name (or alias: ``trt``, ``ts``) checked against the registered exporters."""
    name = TARGET_ALIASES.get(str(to).strip().lower(), str(to).strip().lower())
    known = targets()
    if name not in known:
        raise ExportError(
            f"Unknown export target '{to}'. Known: {', '.join(known)}." + did_you_mean(name, known)
        )
    return name


def get_exporter(source: str, target: str) -> Exporter:
    """The exporter registered for ``source -> target``; the error lists the known ones."""
    from forgeml.eval import canonical_framework

    key = exporter_key(canonical_framework(source), target)
    if key not in EXPORTERS:
        able = [n for n in EXPORTERS.names() if n.endswith(f"->{target}")]
        raise ExportError(
            f"No exporter turns {canonical_framework(source)} models into {target}. "
            f"Exporters to {target}: {', '.join(able) or '(none)'}; all: "
            f"{', '.join(EXPORTERS.names())}."
        )
    try:
        exporter: Exporter = EXPORTERS.load(key)
    except RegistryError as exc:
        raise ExportError(str(exc)) from None
    return exporter


def select_source(
    model: str | os.PathLike[str] | Manifest, framework: str | None, target: str
) -> Manifest:
    """The manifest to export: given, read from a ``.yml`` path, or looked up by name.

    A name with manifests for several frameworks needs ``framework``, unless only
    one of them has an exporter to ``target``.
    """
    from forgeml.eval import Manifest, canonical_framework, find_manifests, get_manifest
    from forgeml.eval import load_manifest as read

    if isinstance(model, Manifest):
        return model
    text = os.fspath(model)
    if text.endswith((".yml", ".yaml")) and Path(text).expanduser().is_file():
        return read(text)
    if framework is not None:
        return get_manifest(text, canonical_framework(framework))
    matches = [m for m in find_manifests() if m.name == text]
    if len(matches) <= 1:
        return get_manifest(text)  # the one, or the error that lists the known names
    able = [m for m in matches if exporter_key(m.framework, target) in EXPORTERS]
    if len(able) == 1:
        return able[0]
    have = ", ".join(sorted(m.framework for m in matches))
    if not able:
        raise ExportError(
            f"Model '{text}' exists for {have}, and none of them exports to {target}. "
            f"Exporters: {', '.join(EXPORTERS.names())}."
        )
    raise ExportError(
        f"Model '{text}' exists for several frameworks that export to {target} "
        f"({', '.join(sorted(m.framework for m in able))}). Pick the source with framework= "
        f"(--framework NAME)."
    )


def default_tolerance(options: ExportOptions) -> tuple[float, float]:
    """``(atol, rtol)`` for the options' precision: fp32 1e-4/1e-3, fp16 1e-2/1e-2,
    int8 1e-1/1e-1."""
    return TOLERANCES[options.precision]


def _options(
    *,
    opset: int | None,
    dynamic_batch: bool,
    fp16: bool,
    int8: bool,
    method: str | None,
    max_batch: int,
    target: str,
) -> ExportOptions:
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ExportError(f"opset must be an ONNX opset number (7 or higher). Got {opset!r}.")
    if opset is not None and target != "onnx":
        raise ExportError(f"opset applies to ONNX exports; the target is {target}.")
    if method is not None and method not in METHODS:
        raise ExportError(
            f"method must be one of {', '.join(METHODS)}. Got {method!r}."
            + did_you_mean(str(method), METHODS)
        )
    if method is not None and target != "torchscript":
        raise ExportError(
            f"method (trace or script) applies to TorchScript; the target is {target}."
        )
    _positive("max_batch", max_batch)
    return ExportOptions(
        opset=opset,
        dynamic_batch=bool(dynamic_batch),
        fp16=bool(fp16),
        int8=bool(int8),
        method=method or "trace",
        max_batch=max_batch,
    )


def _positive(name: str, value: Any, *, zero: bool = False) -> int:
    least = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        kind = "a non-negative integer" if zero else "a positive integer"
        raise ExportError(f"The '{name}' option of export must be {kind}. Got {value!r}.")
    return value


def _tolerance(
    atol: float | None, rtol: float | None, options: ExportOptions
) -> tuple[float, float]:
    default_atol, default_rtol = default_tolerance(options)
    chosen = []
    for name, value, default in (("atol", atol, default_atol), ("rtol", rtol, default_rtol)):
        if value is None:
            chosen.append(default)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ExportError(f"{name} must be a number >= 0. Got {value!r}.")
        if not math.isfinite(value):
            raise ExportError(f"{name} must be finite. Got {value!r}.")
        chosen.append(float(value))
    return chosen[0], chosen[1]


# ----------------------------------------------------------------------------- data


def _validation_batch(
    task: Task, manifest: Manifest, dataset: Any, batch_size: int
) -> tuple[np.ndarray[Any, Any], str]:
    """One batch of model inputs from the held-out data (or ``dataset``), preprocessed."""
    from forgeml.eval._runner import default_dataset

    if dataset is None:
        try:
            dataset = default_dataset(manifest)
        except EvalError:
            raise ExportError(
                f"No validation data for model '{manifest.name}': its manifest names no bundled "
                f"training dataset. Give dataset= (--dataset NAME or PATH)."
            ) from None
    data = task.load_dataset(dataset, manifest, limit=batch_size)
    first = next(iter(data.iter_batches(batch_size)), None)
    if first is None or len(first) == 0:
        raise ExportError(f"Dataset '{data.name}' has no samples to check the export on.")
    return np.ascontiguousarray(task.preprocess(first.raw, manifest)), data.name


def _calibration_batches(
    task: Task, manifest: Manifest, calibration: Any, batch_size: int
) -> list[np.ndarray[Any, Any]]:
    """Preprocessed INT8 calibration batches of one size (a short last batch is dropped)."""
    data = task.load_dataset(calibration, manifest, limit=CALIBRATION_SAMPLES)
    batches = [
        np.ascontiguousarray(task.preprocess(b.raw, manifest), dtype=np.float32)
        for b in data.iter_batches(batch_size)
    ]
    full = [b for b in batches if len(b) == batch_size]
    chosen = full or batches[:1]
    if not chosen:
        raise ExportError(f"The calibration dataset '{data.name}' has no samples.")
    return chosen


# ----------------------------------------------------------------------------- running


def _session(predictor: Any) -> Any:
    import contextlib

    session = getattr(predictor, "session", None)
    return session() if callable(session) else contextlib.nullcontext()


def _predict(predictor: Predictor, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with _session(predictor):
        out = predictor.predict(batch)
        predictor.synchronize()
    return np.array(out, copy=True)


def _load(agent: Any, manifest: Manifest, device: str, threads: int | None) -> tuple[Any, str]:
    """The agent's predictor on ``device``, or on the CPU when its framework cannot use that
    device here (an ONNX Runtime without CUDA beside a TensorRT engine)."""
    chosen = device
    if device != "cpu" and hasattr(agent, "adapter"):
        try:
            if device not in agent.adapter().devices():
                chosen = "cpu"
        except ForgeMLError:
            pass  # load() says what is missing
    return agent.load(manifest, device=chosen, threads=threads), chosen


def _convert_and_check(
    exporter: Exporter,
    source: ExportSource,
    out: Path,
    options: ExportOptions,
    variant: Manifest,
    source_predictor: Predictor,
    *,
    source_device: str,
    atol: float,
    rtol: float,
    runs: int,
    threads: int | None,
) -> tuple[dict[str, Any], str, int, Parity, LatencyComparison | None]:
    """Convert into a temp file next to ``out``, check it, time it; rename it to ``out``
    only when it passes. Returns (exporter info, sha256, size, parity, latency)."""
    from forgeml.eval import WeightsSpec
    from forgeml.eval.agents import get_agent

    name = f"{exporter.source}->{exporter.target}"
    what = f"model '{variant.name}' ({name})"
    batch = source.batch
    expected = _predict(source_predictor, batch)
    # Timed before the export is loaded: another runtime's threads would slow it down.
    source_ms, source_min = time_runs(source_predictor, batch, runs) if runs else (0.0, 0.0)
    with atomic_path(out) as tmp:
        try:
            info = exporter.export(source, tmp, options)
        except ExportError:
            raise
        except Exception as exc:  # converters raise their own exception types
            raise ExportError(
                f"Exporting {what} failed: {type(exc).__name__}: {exc}".rstrip()
            ) from exc
        if not tmp.is_file():
            raise ExportError(f"The {name} exporter wrote no file for {what}.")
        sha256, size = sha256_file(tmp), tmp.stat().st_size
        checked = variant.with_weights(
            WeightsSpec(path=str(tmp), sha256=sha256, format=exporter.format)
        )
        agent = get_agent(exporter.framework)
        try:
            predictor = agent.load(checked, device=source.device, threads=threads)
        except ForgeMLError as exc:
            raise ExportError(
                f"The {exporter.target} export of {what} does not load with the "
                f"{agent.name} agent: {exc}"
            ) from exc
        try:
            actual = _predict(predictor, batch)
            parity = check_parity(expected, actual, atol=atol, rtol=rtol, samples=len(batch))
            if not parity.passed:
                raise ExportError(
                    f"The {exporter.target} export of {what} does not match the original on "
                    f"{parity.samples} validation samples: {parity.describe()}. Nothing was "
                    f"written to {out}. HINT: loosen the tolerance (--atol/--rtol) if the "
                    f"difference is expected (fp16, int8), or check the exporter's options."
                )
            latency = None
            if runs:
                exported_ms, exported_min = time_runs(predictor, batch, runs)
                latency = LatencyComparison(
                    runs=runs,
                    batch_size=len(batch),
                    source_ms=source_ms,
                    exported_ms=exported_ms,
                    source_min_ms=source_min,
                    exported_min_ms=exported_min,
                    source_agent=str(source_predictor.info.get("agent", exporter.source)),
                    exported_agent=str(predictor.info.get("agent", agent.name)),
                    source_device=source_device,
                    exported_device=source.device,
                )
        finally:
            predictor.close()
    return info, sha256, size, parity, latency


# ----------------------------------------------------------------------------- export


def export(
    model: str | os.PathLike[str] | Manifest,
    *,
    to: str,
    output: str | os.PathLike[str] | None = None,
    framework: str | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    int8: bool = False,
    calibration: Any = None,
    method: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dataset: Any = None,
    batch_size: int = 64,
    runs: int = 20,
    device: str | None = None,
    threads: int | None = None,
    max_batch: int = 64,
    name: str | None = None,
    register: bool = True,
    store: bool | str | os.PathLike[str] = True,
) -> ExportResult:
    """Export a model to ``to`` (``onnx``, ``torchscript``, ``tensorrt``) and check the export.

    Args:
        model: a model name (see ``forgeml models ls``), a manifest ``.yml`` path or a
            :class:`~forgeml.eval.Manifest`.
        to: the target format.
        output: where the export goes (default: ``$FORGEML_HOME/exports/<name><suffix>``).
        framework: the source, when the name has manifests for several frameworks that
            export to ``to``.
        opset: the ONNX opset (default: 17; 15 for XGBoost).
        dynamic_batch: leave the batch axis open (ONNX, TensorRT); else it is fixed to
            ``batch_size``.
        fp16: half-precision weights and arithmetic (ONNX, TorchScript, TensorRT).
        int8: 8-bit kernels (TensorRT), calibrated on ``calibration``.
        calibration: the dataset INT8 calibration reads (a bundled name or a path).
        method: TorchScript only: ``"trace"`` (default) or ``"script"``.
        atol, rtol: the parity check passes when every output value of the export is
            within ``atol + rtol * |original|`` of the original's. Default per precision:
            fp32 1e-4/1e-3, fp16 1e-2/1e-2, int8 1e-1/1e-1.
        dataset: where the validation batch comes from (default: the held-out part of
            the model's training dataset), run through the task's preprocessing.
        batch_size: samples in the validation batch.
        runs: timed runs of the batch for the latency comparison (0: no timing).
        device: where the export is checked and timed (default: ``cpu``; ``cuda:0`` for
            TensorRT). The original runs there too when its framework can.
        threads: the frameworks' thread count (default: their own).
        max_batch: TensorRT: the largest batch the engine takes.
        name: register the export under this model name (default: the source's).
        register: write the export's manifest to ``$FORGEML_HOME/models`` (so
            ``forgeml eval --model_name NAME --agent onnxruntime`` finds it).
        store: record the export in the results database (or in the one at this path).

    Raises:
        ExportError: the model cannot be exported, or the export fails the parity check
            (the message has the numbers; nothing is written to ``output``).
    """
    from forgeml._core._env import forgeml_home
    from forgeml.eval import resolve_weights
    from forgeml.eval._runner import resolve_task
    from forgeml.eval.agents import get_agent, normalize_device
    from forgeml.store import cache_dir

    started = time.perf_counter()
    target = canonical_target(to)
    manifest = select_source(model, framework, target)
    exporter = get_exporter(manifest.framework, target)
    options = _options(
        opset=opset,
        dynamic_batch=dynamic_batch,
        fp16=fp16,
        int8=int8,
        method=method,
        max_batch=max_batch,
        target=target,
    )
    batch_size = _positive("batch_size", batch_size)
    runs = _positive("runs", runs, zero=True)
    if threads is not None:
        _positive("threads", threads)
    check = getattr(exporter, "check_options", None)
    if callable(check):
        check(options)
    if int8 and calibration is None:
        raise ExportError(
            "An INT8 export needs calibration data: give calibration= (--calibration DATASET), "
            "a few hundred samples like those the model will see."
        )
    if target == "tensorrt" and options.dynamic_batch and batch_size > options.max_batch:
        raise ExportError(
            f"The validation batch ({batch_size}) is larger than max_batch "
            f"({options.max_batch}). Lower --batch_size or raise --max_batch."
        )
    atol, rtol = _tolerance(atol, rtol, options)
    where = f"model '{manifest.name}' from {manifest.framework} to {target}"
    reason = exporter.unavailable(options)
    if reason is not None:
        raise ExportError(f"Cannot export {where} here: {reason}")
    default_device = "cuda:0" if exporter.framework == "tensorrt" else "cpu"
    try:
        device = normalize_device(device or default_device)
    except EvalError as exc:
        raise ExportError(str(exc)) from None
    registered_name = name or manifest.name
    out = _output_path(output, registered_name, exporter, options, forgeml_home())
    task = resolve_task(manifest.task)
    batch, dataset_name = _validation_batch(task, manifest, dataset, batch_size)
    calibration_batches: list[np.ndarray[Any, Any]] = []
    if int8:  # calibration batches fit the engine: its fixed batch, or up to max_batch
        size = min(CALIBRATION_BATCH, options.max_batch) if options.dynamic_batch else batch_size
        calibration_batches = _calibration_batches(task, manifest, calibration, size)

    source_predictor, source_device = _load(
        get_agent(manifest.framework), manifest, device, threads
    )
    try:
        source = ExportSource(
            model=getattr(source_predictor, "model", None),
            path=Path(resolve_weights(manifest)),
            batch=batch,
            manifest=manifest,
            calibration=calibration_batches,
            device=device,
            cache_dir=cache_dir() / "tensorrt",
        )
        variant = variant_manifest(manifest, exporter, options, registered_name, out)
        info, sha256, size, parity, latency = _convert_and_check(
            exporter,
            source,
            out,
            options,
            variant,
            source_predictor,
            source_device=source_device,
            atol=atol,
            rtol=rtol,
            runs=runs,
            threads=threads,
        )
    finally:
        source_predictor.close()

    from forgeml.eval import WeightsSpec
    from forgeml.eval._provenance import library_versions

    result = ExportResult(
        model=manifest.name,
        model_version=manifest.version,
        source_framework=manifest.framework,
        target=target,
        framework=exporter.framework,
        format=exporter.format,
        path=out,
        sha256=sha256,
        size_bytes=size,
        parity=parity,
        latency=latency,
        options={**options.to_dict(), "precision": options.precision, "batch_size": batch_size},
        dataset=dataset_name,
        device=device,
        info=info,
        provenance={
            "forgeml_version": library_versions(manifest.framework)["forgeml"],
            "versions": {
                **library_versions(manifest.framework),
                **library_versions(exporter.framework),
            },
        },
    )
    result.record_path = Path(f"{out}.json")
    if register:
        registered = variant.with_weights(
            WeightsSpec(path=str(out), sha256=sha256, format=exporter.format)
        )
        result.manifest_path = register_manifest(registered, forgeml_home() / "models")
        result.registered_as = registered_name
    result.seconds = round(time.perf_counter() - started, 3)
    atomic_write_text(result.record_path, result.to_json() + "\n")
    if store is not False:
        from forgeml.eval import ResultsDB

        ResultsDB(None if store is True else store).add_export(result.to_dict())
    return result


def _output_path(
    output: str | os.PathLike[str] | None,
    name: str,
    exporter: Exporter,
    options: ExportOptions,
    home: Path,
) -> Path:
    if output is None:
        tag = "" if options.precision == "fp32" else f".{options.precision}"
        return home / "exports" / f"{name}{tag}{exporter.suffix}"
    out = Path(output).expanduser().absolute()
    if out.is_dir():
        raise ExportError(f"The export's output '{out}' is a folder. Give a file name.")
    if exporter.target == "tensorrt" and out.suffix.lower() not in (".engine", ".plan", ".trt"):
        raise ExportError(
            f"A TensorRT engine's file name ends in .engine, .plan or .trt (the agent "
            f"recognises engines by it). Got '{out.name}'."
        )
    return out


def variant_manifest(
    manifest: Manifest, exporter: Exporter, options: ExportOptions, name: str, out: Path
) -> Manifest:
    """The manifest of the export: the source's, for the exporter's framework and format."""
    from forgeml.eval import WeightsSpec
    from forgeml.eval._weights import manifest_weights_text

    attributes = {k: v for k, v in manifest.attributes.items() if k != "allow"}
    attributes["exported_from"] = {
        "framework": manifest.framework,
        "weights": manifest_weights_text(manifest),
        "record": f"{out}.json",
    }
    attributes["precision"] = options.precision
    if not options.dynamic_batch and exporter.target != "torchscript":
        attributes["static_batch"] = True  # runs only at the batch size it was exported for
    if exporter.framework == "tensorrt":
        attributes["max_batch"] = options.max_batch
    if exporter.format == "torchscript":
        attributes["trust"] = True  # forgeml wrote the program; its sha256 pins it
    description = manifest.description.rstrip()
    note = f"Exported from {manifest.framework} to {exporter.target} by forgeml export."
    return replace(
        manifest,
        name=name,
        framework=exporter.framework,
        framework_version=None,
        description=f"{description} {note}".strip(),
        weights=WeightsSpec(path=str(out), format=exporter.format),
        attributes=attributes,
        source=None,
    )


def register_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write ``manifest`` to ``folder/<name>.<framework>.yml`` (atomically); returns the path."""
    from forgeml.eval import dump_manifest

    path = folder / f"{manifest.name}.{manifest.framework}.yml"
    header = (
        f"# Written by forgeml export: {manifest.name} for {manifest.framework}.\n"
        f"# Its weights are pinned by sha256; export again to replace them.\n"
    )
    atomic_write_text(path, header + dump_manifest(manifest))
    return path


# ----------------------------------------------------------------------------- objects


def export_model(
    model: Any,
    batch: Any,
    output: str | os.PathLike[str],
    *,
    source: str,
    to: str,
    opset: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    method: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    runs: int = 0,
    device: str = "cpu",
    threads: int | None = None,
) -> ExportResult:
    """Export a model object (no manifest) of framework ``source`` and check it on ``batch``.

    ``batch`` is a batch of model inputs: its samples trace the model, and the
    export's outputs on it are compared with the model's. Nothing is registered
    or recorded; ``output`` is written only when the check passes. ``model`` is an
    ``.onnx`` path for ``source="onnxruntime"``.
    """
    from forgeml.eval import InputSpec, Manifest, OutputSpec, WeightsSpec, canonical_framework
    from forgeml.eval.agents import AdapterPredictor, get_agent, normalize_device

    started = time.perf_counter()
    target = canonical_target(to)
    framework = canonical_framework(source)
    exporter = get_exporter(framework, target)
    options = _options(
        opset=opset,
        dynamic_batch=dynamic_batch,
        fp16=fp16,
        int8=False,
        method=method,
        max_batch=max(64, len(batch)),
        target=target,
    )
    atol, rtol = _tolerance(atol, rtol, options)
    reason = exporter.unavailable(options)
    if reason is not None:
        raise ExportError(f"Cannot export a {framework} model to {target} here: {reason}")
    device = normalize_device(device)
    array = np.ascontiguousarray(batch)
    is_file = isinstance(model, str | os.PathLike)
    label = Path(os.fspath(model)).stem if is_file else type(model).__name__
    template = Manifest(
        name=label,
        task="",
        framework=framework,
        inputs=(InputSpec("input", tuple(int(d) for d in array.shape[1:]), str(array.dtype)),),
        output=OutputSpec("classification"),
        weights=WeightsSpec(path=os.fspath(model) if is_file else "(object)"),
    )
    agent: Any = get_agent(framework)
    if is_file:
        source_predictor, source_device = _load(agent, template, device, threads)
    else:
        adapter = agent.adapter()
        saver = getattr(adapter, "thread_state", None) if threads is not None else None
        restore = saver() if saver is not None else None  # close() puts the threads back
        placed, _ = adapter.place(model, device, threads=threads)
        info = {**adapter.inference_info(), "agent": agent.name, "device": device}
        source_predictor = AdapterPredictor(adapter, placed, device, info, restore=restore)
        source_device = device
    out = Path(output).expanduser().absolute()
    try:
        variant = variant_manifest(template, exporter, options, label, out)
        export_source = ExportSource(
            model=None if is_file else source_predictor.model,
            path=Path(os.fspath(model)) if is_file else None,
            batch=array,
            device=device,
        )
        info, sha256, size, parity, latency = _convert_and_check(
            exporter,
            export_source,
            out,
            options,
            variant,
            source_predictor,
            source_device=source_device,
            atol=atol,
            rtol=rtol,
            runs=runs,
            threads=threads,
        )
    finally:
        if is_file:
            source_predictor.close()
        else:  # the caller's model stays theirs: only the thread settings are put back
            source_predictor.model = None
            source_predictor.close()
    return ExportResult(
        model=label,
        source_framework=framework,
        target=target,
        framework=exporter.framework,
        format=exporter.format,
        path=out,
        sha256=sha256,
        size_bytes=size,
        parity=parity,
        latency=latency,
        options={**options.to_dict(), "precision": options.precision},
        device=device,
        info=info,
        seconds=round(time.perf_counter() - started, 3),
    )
