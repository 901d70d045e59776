"""Model manifests: YAML asset files (no executable code) that describe a model.

A manifest names the model, its task and framework, its inputs and output, and
where its weights are::

    name: digits_cnn
    version: "1.0"
    task: image_classification
    description: A small CNN for scikit-learn's 8x8 digits.
    framework: {name: pytorch, version: ">=2.0"}
    inputs:
      - {name: image, shape: [1, 8, 8], dtype: float32, layout: NCHW,
         color_mode: grayscale, mean: [0.0], scale: [0.0625]}
    output: {type: classification, labels: ["0", "1", ...]}   # or labels_file: labels.txt
    weights: {path: digits_cnn.dry, sha256: "..."}   # or url: + sha256:, or
                                                      # repo: + selector:, or zoo:
    attributes: {training_dataset: digits, kind: cnn, license: Apache-2.0}

Preprocessing maps a raw sample ``x`` to ``(x - mean) * scale`` per channel,
converts it to ``dtype`` and arranges it in ``layout``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError, did_you_mean

log = logging.getLogger("forgeml.eval")

LAYOUTS = ("NCHW", "NHWC", "flat")
COLOR_MODES = ("grayscale", "rgb", "bgr")
OUTPUT_TYPES = ("classification", "regression")
WEIGHT_SOURCES = ("path", "url", "repo", "zoo")
#: Framework names manifests use, and the names they are also known by.
FRAMEWORK_ALIASES = {
    "torch": "pytorch",
    "keras": "tensorflow",
    "tf": "tensorflow",
    "scikit-learn": "sklearn",
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "trt": "tensorrt",
}
FRAMEWORK_NAMES = (
    "onnxruntime",
    "pytorch",
    "sklearn",
    "tensorflow",
    "tensorrt",
    "torchscript",
    "xgboost",
)
#: What a model's name and framework may look like: they become file names
#: (``forgeml models add`` writes ``<name>.<framework>.yml``).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def canonical_framework(name: str) -> str:
    """``"torch"`` -> ``"pytorch"``, ``"keras"`` -> ``"tensorflow"``; unknown names kept."""
    lowered = str(name).strip().lower()
    return FRAMEWORK_ALIASES.get(lowered, lowered)


def known_frameworks() -> list[str]:
    """The frameworks manifests may name: the built-in ones, plus those of the other agents
    registered (``AGENTS.register`` or the entry-point group ``forgeml.agent``).

    An agent that cannot be loaded counts by its registry name.
    """
    from forgeml.eval._registries import AGENTS

    known = set(FRAMEWORK_NAMES)
    for name in AGENTS.names():
        if name in FRAMEWORK_NAMES:
            continue
        try:
            framework = getattr(AGENTS.load(name), "framework", None) or name
        except Exception:  # a broken plugin must not break every manifest
            framework = name
        known.add(canonical_framework(str(framework)))
    return sorted(known)


@dataclass(frozen=True)
class InputSpec:
    """One model input, per sample (no batch dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "flat"
    color_mode: str | None = None
    mean: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class OutputSpec:
    type: str
    #: Class names, from ``labels`` or read from ``labels_file``.
    labels: tuple[str, ...] | None = None
    #: The text file the labels were read from (one per line), as the manifest names it.
    labels_file: str | None = None


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights are: exactly one of ``path``, ``url``, ``repo`` or ``zoo``."""

    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    repo: str | None = None
    selector: Mapping[str, Any] | None = None
    zoo: str | None = None
    #: ``"forgeml"`` (an object archive), ``"onnx"``, ``"safetensors"``, ... (default: suffix)
    format: str | None = None

    @property
    def source(self) -> str:
        return next(s for s in WEIGHT_SOURCES if getattr(self, s) is not None)


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    framework: str
    inputs: tuple[InputSpec, ...]
    output: OutputSpec
    weights: WeightsSpec
    version: str = "1"
    framework_version: str | None = None
    description: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: The file the manifest was read from (weights paths are relative to it).
    source: Path | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.framework)

    @property
    def input(self) -> InputSpec:
        """The only input (most models have one)."""
        if len(self.inputs) != 1:
            names = ", ".join(i.name for i in self.inputs)
            raise EvalError(
                f"Model '{self.name}' has {len(self.inputs)} inputs ({names}), but this needs "
                f"a model with one input. A model with several inputs needs a task that "
                f"prepares each of them (from manifest.inputs)."
            )
        return self.inputs[0]

    def with_weights(self, weights: WeightsSpec) -> Manifest:
        return replace(self, weights=weights)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain data (what :func:`dump_manifest` writes)."""

        def drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in data.items() if v is not None}

        framework = drop_none({"name": self.framework, "version": self.framework_version})
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.description,
            "framework": framework,
            "inputs": [
                drop_none(
                    {
                        "name": i.name,
                        "shape": list(i.shape),
                        "dtype": i.dtype,
                        "layout": i.layout,
                        "color_mode": i.color_mode,
                        "mean": list(i.mean),
                        "scale": list(i.scale),
                    }
                )
                for i in self.inputs
            ],
            "output": drop_none(
                {
                    "type": self.output.type,
                    "labels": list(self.output.labels)
                    if self.output.labels and self.output.labels_file is None
                    else None,
                    "labels_file": self.output.labels_file,
                }
            ),
            "weights": drop_none(
                {
                    "path": self.weights.path,
                    "url": self.weights.url,
                    "sha256": self.weights.sha256,
                    "repo": self.weights.repo,
                    "selector": dict(self.weights.selector) if self.weights.selector else None,
                    "zoo": self.weights.zoo,
                    "format": self.weights.format,
                }
            ),
            "attributes": dict(self.attributes),
        }


class _Reader:
    """Validates one manifest document, naming the file and field in every error."""

    def __init__(self, where: str, base: Path, frameworks: Iterable[str] = ()) -> None:
        self.where = where
        #: The folder relative paths in the manifest start from (the manifest's own).
        self.base = base
        #: Frameworks accepted besides :func:`known_frameworks` (an unregistered agent's).
        self.frameworks = {canonical_framework(f) for f in frameworks}

    def fail(self, field_name: str, problem: str) -> EvalError:
        return EvalError(f"{self.where}: '{field_name}' {problem}")

    def mapping(self, data: Any, field_name: str) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail(field_name, f"must be a mapping. Got {type(data).__name__}.")
        return data

    def text(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> Any:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{path}{key}", "is required.")
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            raise self.fail(f"{path}{key}", f"must be a non-empty string. Got {value!r}.")
        return str(value)

    def safe_name(self, value: str, field_name: str) -> str:
        """``value`` when it can be part of a file name (no path separators, no ``..``)."""
        if not SAFE_NAME.fullmatch(value):
            raise self.fail(
                field_name,
                f"must start with a letter or digit and hold only letters, digits, '_', "
                f"'.' and '-' (it becomes part of a file name). Got {value!r}.",
            )
        return value

    def framework(self, data: Mapping[str, Any]) -> str:
        """The canonical framework name, one of :func:`known_frameworks`."""
        name = canonical_framework(self.text(data, "name", "framework."))
        self.safe_name(name, "framework.name")
        if name not in FRAMEWORK_NAMES and name not in self.frameworks:
            known = known_frameworks()
            if name not in known:
                raise self.fail(
                    "framework.name",
                    f"is not a known framework. Known: {', '.join(known)} (or an alias: "
                    f"{', '.join(sorted(FRAMEWORK_ALIASES))}). Got {name!r}."
                    + did_you_mean(name, [*known, *FRAMEWORK_ALIASES])
                    + " HINT: register an agent for another framework (forgeml.eval.AGENTS).",
                )
        return name

    def choice(self, value: str, options: Sequence[str], field_name: str) -> str:
        if value not in options:
            raise self.fail(
                field_name,
                f"must be one of {', '.join(options)}. Got {value!r}."
                + did_you_mean(value, options),
            )
        return value

    def numbers(self, value: Any, field_name: str, kind: type) -> tuple[Any, ...]:
        items = value if isinstance(value, list | tuple) else [value]
        if not items or any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
            raise self.fail(field_name, f"must be a number or a list of numbers. Got {value!r}.")
        if kind is int and any(not float(v).is_integer() or v <= 0 for v in items):
            raise self.fail(field_name, f"must be positive integers. Got {value!r}.")
        return tuple(kind(v) for v in items)

    def read(self, data: Any, source: Path | None) -> Manifest:
        data = self.mapping(data, "(top level)")
        known = {
            "name", "version", "task", "framework", "inputs", "output", "weights",
            "attributes", "description",
        }  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise self.fail(
                unknown[0],
                f"is not a manifest field. Known: {', '.join(sorted(known))}."
                + did_you_mean(unknown[0], known),
            )
        framework = data.get("framework")
        if isinstance(framework, str):
            framework = {"name": framework}
        framework = self.mapping(framework, "framework")
        inputs = data.get("inputs")
        if isinstance(inputs, Mapping):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise self.fail("inputs", "must be a list of inputs (shape, dtype, layout, ...).")
        return Manifest(
            name=self.safe_name(self.text(data, "name", ""), "name"),
            version=self.text(data, "version", "", required=False) or "1",
            task=self.text(data, "task", ""),
            framework=self.framework(framework),
            framework_version=self.text(framework, "version", "framework.", required=False),
            description=self.text(data, "description", "", required=False) or "",
            inputs=tuple(self.input(i, n) for n, i in enumerate(inputs)),
            output=self.output(data.get("output")),
            weights=self.weights(data.get("weights")),
            attributes=dict(self.mapping(data.get("attributes") or {}, "attributes")),
            source=source,
        )

    def input(self, data: Any, index: int) -> InputSpec:
        path = f"inputs[{index}]."
        data = self.mapping(data, f"inputs[{index}]")
        layout = self.choice(
            self.text(data, "layout", path, required=False) or "flat", LAYOUTS, f"{path}layout"
        )
        color = self.text(data, "color_mode", path, required=False)
        if color is not None:
            color = self.choice(color, COLOR_MODES, f"{path}color_mode")
        if data.get("shape") is None:
            raise self.fail(f"{path}shape", "is required (per sample, without the batch).")
        dtype = self.text(data, "dtype", path, required=False) or "float32"
        try:
            import numpy as np

            np.dtype(dtype)
        except TypeError:
            raise self.fail(f"{path}dtype", f"is not a numpy dtype. Got {dtype!r}.") from None
        return InputSpec(
            name=self.text(data, "name", path, required=False) or f"input{index}",
            shape=self.numbers(data["shape"], f"{path}shape", int),
            dtype=dtype,
            layout=layout,
            color_mode=color,
            mean=self.numbers(data.get("mean", 0.0), f"{path}mean", float),
            scale=self.numbers(data.get("scale", 1.0), f"{path}scale", float),
        )

    def output(self, data: Any) -> OutputSpec:
        data = self.mapping(data, "output")
        known = ("type", "labels", "labels_file")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise self.fail(
                f"output.{unknown[0]}",
                f"is unknown. Known: {', '.join(known)}." + did_you_mean(unknown[0], known),
            )
        kind = self.choice(self.text(data, "type", "output."), OUTPUT_TYPES, "output.type")
        labels = data.get("labels")
        labels_file = self.text(data, "labels_file", "output.", required=False)
        if labels is not None and labels_file is not None:
            raise self.fail("output", "has both labels and labels_file; give one of them.")
        if labels is not None:
            if not isinstance(labels, list) or not labels:
                raise self.fail("output.labels", f"must be a list of names. Got {labels!r}.")
            labels = tuple(str(label) for label in labels)
        elif labels_file is not None:
            labels = self.labels_file(labels_file)
        return OutputSpec(type=kind, labels=labels, labels_file=labels_file)

    def labels_file(self, name: str) -> tuple[str, ...]:
        """The labels in a text file, one per line (blank lines skipped)."""
        path = (self.base / Path(name).expanduser()).absolute()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise self.fail(
                "output.labels_file",
                f"names '{path}', which cannot be read ({reason}). Give a text file with "
                f"one label per line, relative to the manifest's folder.",
            ) from None
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not labels:
            raise self.fail("output.labels_file", f"names '{path}', which holds no labels.")
        return labels

    def weights(self, data: Any) -> WeightsSpec:
        data = self.mapping(data, "weights")
        known = {*WEIGHT_SOURCES, "sha256", "selector", "format"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise self.fail(
                f"weights.{unknown[0]}", f"is unknown. Known: {', '.join(sorted(known))}."
            )
        sources = [s for s in WEIGHT_SOURCES if data.get(s) is not None]
        if len(sources) != 1:
            raise self.fail(
                "weights",
                f"must name exactly one of {', '.join(WEIGHT_SOURCES)}. Got {sources or 'none'}.",
            )
        sha256 = self.text(data, "sha256", "weights.", required=False)
        if sha256 is not None and (
            len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256.lower())
        ):
            raise self.fail("weights.sha256", f"must be 64 hex digits. Got {sha256!r}.")
        if sources == ["url"] and sha256 is None:
            raise self.fail(
                "weights.sha256", "is required with weights.url (downloads are verified)."
            )
        selector = data.get("selector")
        if sources == ["repo"] and not isinstance(selector, Mapping):
            raise self.fail(
                "weights.selector",
                "is required with weights.repo: {cls: ..., args: [...], kwargs: {...}}.",
            )
        if isinstance(selector, Mapping):
            self.selector(selector)
        return WeightsSpec(
            path=self.text(data, "path", "weights.", required=False),
            url=self.text(data, "url", "weights.", required=False),
            sha256=sha256.lower() if sha256 else None,
            repo=self.text(data, "repo", "weights.", required=False),
            selector=dict(selector) if isinstance(selector, Mapping) else None,
            zoo=self.text(data, "zoo", "weights.", required=False),
            format=self.text(data, "format", "weights.", required=False),
        )

    def selector(self, selector: Mapping[str, Any]) -> None:
        known = ("cls", "args", "kwargs", "tags")
        unknown = sorted(set(selector) - set(known))
        if unknown:
            raise self.fail(
                f"weights.selector.{unknown[0]}",
                f"is unknown. Known: {', '.join(known)}." + did_you_mean(unknown[0], known),
            )
        checks = {
            "cls": (str, "a class path 'pkg.module:Name' or a class name"),
            "args": (list, "a list of leading positional arguments"),
            "kwargs": (Mapping, "a mapping of keyword arguments"),
            "tags": (str | list, "a tag or a list of tags"),
        }
        for key, (kind, what) in checks.items():
            value = selector.get(key)
            if value is not None and not isinstance(value, kind):
                raise self.fail(f"weights.selector.{key}", f"must be {what}. Got {value!r}.")


def parse_manifest(
    data: Any, *, source: str | os.PathLike[str] | None = None, frameworks: Iterable[str] = ()
) -> Manifest:
    """Validate manifest data (a mapping, as read from YAML).

    Relative paths in it (``output.labels_file``) start from ``source``'s folder,
    or from the working directory when there is no ``source``. Its framework must
    be one of :func:`known_frameworks`, or of ``frameworks`` (e.g. the framework of
    an agent object that is not registered).
    """
    where = str(source) if source is not None else "manifest"
    base = Path(source).absolute().parent if source is not None else Path.cwd()
    reader = _Reader(where, base, frameworks)
    return reader.read(data, Path(source) if source is not None else None)


def load_manifest(path: str | os.PathLike[str], *, frameworks: Iterable[str] = ()) -> Manifest:
    """Read and validate a manifest file (safe YAML only); ``frameworks``: see
    :func:`parse_manifest`."""
    from forgeml._core._errors import ConfigError
    from forgeml.config._loader import parse_yaml

    file = Path(path).expanduser().absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"Cannot read manifest '{file}': {exc.strerror}.") from None
    try:
        data = parse_yaml(text, path=file)
    except ConfigError as exc:
        raise EvalError(f"Manifest {exc}") from None
    return parse_manifest(data, source=file, frameworks=frameworks)


def dump_manifest(manifest: Manifest) -> str:
    from forgeml.config._loader import dump_yaml

    return dump_yaml(manifest.to_dict())


def manifest_dirs() -> list[Path]:
    """Where manifests are found: the built-in zoo, ``$FORGEML_MODELS`` (``:``-separated)
    and the models added with ``forgeml models add`` (``$FORGEML_HOME/models``)."""
    from forgeml._core._env import forgeml_home

    dirs = [Path(__file__).parent / "manifests"]
    dirs += [
        Path(p).expanduser() for p in os.environ.get("FORGEML_MODELS", "").split(os.pathsep) if p
    ]
    dirs.append(forgeml_home() / "models")
    return dirs


def find_manifests(dirs: Iterable[Path] | None = None) -> list[Manifest]:
    """Every manifest in the search folders; later folders override earlier ones by key.

    A file that is not a valid manifest is skipped with a warning (logger
    ``forgeml.eval``) naming it and what is wrong, so one bad file does not hide
    every other model; :func:`load_manifest` reports it as an error.
    """
    found: dict[tuple[str, str], Manifest] = {}
    for directory in manifest_dirs() if dirs is None else dirs:
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
            try:
                manifest = load_manifest(path)
            except EvalError as exc:
                log.warning("Skipping manifest '%s': %s", path, exc)
                continue
            found[manifest.key] = manifest
    return sorted(found.values(), key=lambda m: m.key)


def get_manifest(
    name: str, framework: str | None = None, *, pick: str = "name the agent"
) -> Manifest:
    """The manifest of model ``name`` (for ``framework``, when several frameworks have it).

    ``pick`` is what the error for a name that several frameworks have, and no
    ``framework``, tells the caller to do (a command says which option to use).
    """
    manifests = find_manifests()
    matches = [m for m in manifests if m.name == name]
    if not matches:
        names = sorted({m.name for m in manifests})
        raise EvalError(
            f"Unknown model '{name}'. Known: {', '.join(names) or '(none)'}."
            + did_you_mean(name, names)
        )
    if framework is not None:
        wanted = canonical_framework(framework)
        chosen = [m for m in matches if m.framework == wanted]
        if not chosen:
            have = ", ".join(sorted(m.framework for m in matches))
            raise EvalError(
                f"Model '{name}' has no {wanted} version. It exists for: {have}. "
                f"Pick one of those agents, or export the model (forgeml export)."
            )
        return chosen[0]
    if len(matches) > 1:
        have = ", ".join(sorted(m.framework for m in matches))
        raise EvalError(f"Model '{name}' exists for several frameworks ({have}); {pick}.")
    return matches[0]
