"""Exact requirements from the running environment: forgeml's own, and one set per framework.

Versions come from the installed distributions (``importlib.metadata``), with
every dependency reached from a root pinned too, so the image installs what was
tested here. A local version label (``torch 2.13.0+cpu``) is dropped: the CPU or
CUDA build is chosen by the index the Dockerfile installs from.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from forgeml._core._errors import PackageError, did_you_mean
from forgeml._version import __version__

log = logging.getLogger("forgeml.package")

#: The forgeml extras every image installs (the server).
SERVE_EXTRAS = ("serve",)
#: Manifest framework -> the distributions its agent needs at run time (CPU builds). The
#: first installed name of an ``a|b`` alternative is pinned.
FRAMEWORK_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "pytorch": ("torch",),
    "sklearn": ("scikit-learn", "skops"),
    "tensorflow": ("tensorflow-cpu|tensorflow", "keras"),
    "tensorrt": ("tensorrt", "onnxruntime"),
    "torchscript": ("torch",),
    "xgboost": ("xgboost-cpu|xgboost", "scikit-learn"),
}
#: Frameworks that only run on an NVIDIA GPU (``--gpu`` required).
GPU_ONLY = ("tensorrt",)
#: CPU distribution -> what a GPU image installs instead, at the same version.
GPU_VARIANTS: Mapping[str, str] = {
    "onnxruntime": "onnxruntime-gpu",
    "tensorflow-cpu": "tensorflow[and-cuda]",
    "xgboost-cpu": "xgboost",
}
#: The index of PyTorch's CPU wheels (the default PyPI torch is the CUDA build).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Pin:
    """One pinned distribution: its name as published, its version, and its extras."""

    name: str
    version: str
    extras: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.name}{extras}=={self.version}"


def canonical_name(name: str) -> str:
    """PEP 503 normal form: ``Scikit_Learn`` -> ``scikit-learn``."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def framework_names() -> list[str]:
    """The frameworks a package can be made for."""
    return sorted(FRAMEWORK_PACKAGES)


def check_framework(framework: str) -> str:
    """The canonical manifest framework name, or a :class:`PackageError` naming the known ones."""
    from forgeml.eval._manifest import canonical_framework

    name = canonical_framework(framework)
    if name not in FRAMEWORK_PACKAGES:
        known = framework_names()
        raise PackageError(
            f"Unknown framework '{framework}'. Known: {', '.join(known)}."
            + did_you_mean(name, known)
        )
    return name


def wheel_name(version: str = __version__) -> str:
    """The file name of forgeml's (pure Python) wheel: ``forgeml-<version>-py3-none-any.whl``."""
    return f"forgeml-{version.replace('-', '_')}-py3-none-any.whl"


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def _distribution(spec: str) -> metadata.Distribution:
    """The first installed distribution of ``a|b``; a :class:`PackageError` when none is."""
    names = spec.split("|")
    for name in names:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    raise PackageError(
        f"'{names[0]}' is not installed in this environment ({', '.join(names)} looked up), so "
        f"its version cannot be pinned. Install the framework here first (e.g. pip install "
        f"'forgeml[{names[0].split('-')[0]}]'), then package again."
    )


def closure(roots: Iterable[str], *, extras: Iterable[str] = ()) -> dict[str, Pin]:
    """Every installed distribution that ``roots`` need, pinned: canonical name -> :class:`Pin`.

    ``roots`` are distribution names (``a|b``: the first installed one); ``extras`` are
    the extras of the first root whose requirements count too. Markers are evaluated
    for this interpreter. A dependency that the metadata names but is not installed
    is skipped with a warning (the environment is incomplete: ``pip check`` says so).
    """
    from packaging.requirements import Requirement

    pins: dict[str, Pin] = {}
    done: set[tuple[str, str]] = set()
    todo: list[tuple[metadata.Distribution, tuple[str, ...]]] = []
    for n, spec in enumerate(roots):
        todo.append((_distribution(spec), tuple(extras) if n == 0 else ()))
    while todo:
        dist, wanted = todo.pop()
        name = canonical_name(dist.metadata["Name"])
        pins.setdefault(name, Pin(dist.metadata["Name"], _public(dist.version)))
        for extra in ("", *wanted):
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for text in dist.requires or []:
                requirement = Requirement(text)
                marker = requirement.marker
                if marker is not None and not marker.evaluate({"extra": extra}):
                    continue
                if extra and (marker is None or "extra" not in str(marker)):
                    continue  # a base requirement: seen with extra ""
                try:
                    child = metadata.distribution(requirement.name)
                except metadata.PackageNotFoundError:
                    log.warning(
                        "%s needs %s, which is not installed here: not pinned.",
                        dist.metadata["Name"],
                        requirement,
                    )
                    continue
                todo.append((child, tuple(sorted(requirement.extras))))
    return pins


@dataclass(frozen=True)
class Requirements:
    """The requirement files of a build context: file name -> text, and the pins."""

    #: ``requirements.txt``: forgeml with its server extras, and everything they need.
    base: dict[str, Pin]
    #: manifest framework -> its pins that ``base`` does not already have.
    frameworks: dict[str, dict[str, Pin]]
    gpu: bool = False
    #: The file name of forgeml's wheel in ``wheels/``.
    wheel: str = field(default_factory=wheel_name)

    @property
    def forgeml_requirement(self) -> str:
        """``forgeml[serve]``: what the image installs of forgeml (from its wheel)."""
        return "forgeml[" + ",".join(SERVE_EXTRAS) + "]"

    @property
    def install(self) -> str:
        """The pip argument that installs forgeml from the wheel by path, with its extras."""
        return f'"wheels/{self.wheel}[{",".join(SERVE_EXTRAS)}]"'

    @property
    def files(self) -> dict[str, str]:
        header = (
            "# Written by forgeml package from the environment it ran in: the exact versions\n"
            "# of what {what} needs. forgeml itself is installed from its wheel by path, never\n"
            "# by name from an index (forgeml is not on PyPI; a package of that name there is\n"
            "# not this one):\n"
            "#   pip install {install} -r requirements.txt{more}\n"
        )
        more = "".join(f" -r requirements-{f}.txt" for f in self.frameworks)
        lines = [header.format(what=self.forgeml_requirement, install=self.install, more=more)]
        lines += sorted(p.line for k, p in self.base.items() if k != "forgeml")
        files = {"requirements.txt": "\n".join(lines) + "\n"}
        for framework, pins in self.frameworks.items():
            note = f"# The {framework} runtime (on top of requirements.txt), exact versions.\n"
            if not self.gpu and any(canonical_name(p.name) == "torch" for p in pins.values()):
                note += (
                    f"# torch: the CPU build, from --extra-index-url {TORCH_CPU_INDEX}\n"
                    f"# (the Dockerfile passes it; plain PyPI has the CUDA build).\n"
                )
            body = sorted(p.line for p in pins.values())
            files[f"requirements-{framework}.txt"] = note + "\n".join(body) + "\n"
        return files

    @property
    def needs_torch_index(self) -> bool:
        return not self.gpu and any(
            canonical_name(p.name) == "torch"
            for pins in self.frameworks.values()
            for p in pins.values()
        )


def requirements(
    frameworks: Iterable[str], *, gpu: bool = False, wheel: str | None = None
) -> Requirements:
    """The pinned requirements of an image that serves models of ``frameworks``.

    ``wheel``: the file name of forgeml's wheel in ``wheels/`` (default: :func:`wheel_name`).
    """
    chosen = list(dict.fromkeys(check_framework(f) for f in frameworks))
    for framework in chosen:
        if framework in GPU_ONLY and not gpu:
            raise PackageError(
                f"A {framework} model runs only on an NVIDIA GPU: package it with --gpu "
                f"(gpu=True), or package its ONNX export (--format onnx)."
            )
    base = closure(["forgeml"], extras=SERVE_EXTRAS)
    per_framework: dict[str, dict[str, Pin]] = {}
    for framework in chosen:
        pins = closure(FRAMEWORK_PACKAGES[framework])
        own = {k: p for k, p in pins.items() if k not in base}
        if gpu:
            own = {k: _gpu_variant(p) for k, p in own.items()}
        per_framework[framework] = own
    return Requirements(base=base, frameworks=per_framework, gpu=gpu, wheel=wheel or wheel_name())


def _gpu_variant(pin: Pin) -> Pin:
    variant = GPU_VARIANTS.get(canonical_name(pin.name))
    if variant is None:
        return pin
    name, _, extras = variant.partition("[")
    return Pin(name, pin.version, tuple(e for e in extras.rstrip("]").split(",") if e))
