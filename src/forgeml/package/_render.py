"""Render the build files (Dockerfile, .dockerignore, MLproject, Apptainer definition)
from the Jinja2 templates in ``forgeml/package/templates``."""

from __future__ import annotations

import json
import re
import shlex
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import PackageError
from forgeml._version import __version__
from forgeml.package._requirements import TORCH_CPU_INDEX, Requirements, requirements

TEMPLATES = Path(__file__).parent / "templates"
#: The Python image a CPU build starts from (``{python}``: the Python version).
CPU_BASE = "python:{python}-slim-bookworm"
#: The image a GPU build starts from (CUDA runtime + cuDNN; Python is installed with apt).
GPU_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
#: The Python that ``apt-get install python3`` gives on :data:`GPU_BASE` (Ubuntu 24.04).
GPU_PYTHON = "3.12"
#: The port the server listens on inside the image.
DEFAULT_PORT = 8000
#: What a model package's health check asks.
HEALTH_PATH = "/healthz"
_IMAGE_CHARS = re.compile(r"[^a-z0-9_.-]+")
_PYTHON_IMAGE = re.compile(r"(?:^|/)python:(3\.\d+)(?![\d])")


def _jinja() -> Any:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 comes with forgeml[template]
        raise PackageError(
            "forgeml package renders its files with Jinja2, which is not installed. "
            "Install it: pip install 'forgeml[template]'."
        ) from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["exec_form"] = lambda args: json.dumps([str(a) for a in args])
    env.filters["shell_join"] = lambda args: shlex.join(str(a) for a in args)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


def image_name(name: str) -> str:
    """A valid image name for ``name``: ``forgeml-<name>:<forgeml version>``, lower case."""
    slug = _IMAGE_CHARS.sub("-", name.lower()).strip("-._") or "model"
    return f"forgeml-{slug}:{__version__}"


def running_python() -> str:
    """``"3.11"``: the Python version running forgeml, whose environment the pins come from."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def base_python(base: str) -> str | None:
    """The Python version of the image ``base`` when it can be told from its name: the
    ``python:X.Y...`` images and :data:`GPU_BASE`; None for any other image."""
    if base == GPU_BASE:
        return GPU_PYTHON
    match = _PYTHON_IMAGE.search(base)
    return match.group(1) if match else None


def python_mismatch(base: str, *, chosen: bool = False) -> str | None:
    """Why the image ``base`` may not install the pins (its Python is not the running one),
    or None when it is the same Python or cannot be told. ``chosen``: the user named
    ``base`` (``--base``), rather than ``--python``/``--gpu`` picking it."""
    image, here = base_python(base), running_python()
    if image is None or image == here:
        return None
    if chosen:
        fix = (
            f"Pass --base with a Python {here} image, or run forgeml package under Python {image}."
        )
    elif base == GPU_BASE:
        fix = (
            f"Run forgeml package under Python {image}, or pass --base with a CUDA image whose "
            f"python3 is {here}."
        )
    else:
        fix = (
            f"Leave --python out (it defaults to this Python, {here}), pass --python {here}, "
            f"or run forgeml package under Python {image}."
        )
    return (
        f"The base image '{base}' has Python {image}, but the requirements are pinned from "
        f"the environment of this Python {here}: a pinned version may have no wheel for "
        f"Python {image}, and dependencies chosen by Python-version markers may differ, so "
        f"the build can fail. {fix}"
    )


def warn_python_mismatch(base: str, *, chosen: bool = False) -> str | None:
    """Warn (``UserWarning``) when :func:`python_mismatch` finds one; returns the message."""
    message = python_mismatch(base, chosen=chosen)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=3)
    return message


def base_image(*, gpu: bool, base: str | None, python: str | None = None) -> str:
    """The image both stages start from: ``base``, or the CPU/GPU default (the CPU one for
    ``python``, default: the running Python's X.Y)."""
    python = running_python() if python is None else python
    if base is not None:
        if not base.strip() or any(c.isspace() for c in base):
            raise PackageError(
                f"--base must be an image reference like 'python:3.11-slim'. Got {base!r}."
            )
        return base
    if not re.fullmatch(r"3\.\d+", python):
        raise PackageError(f"python must be a version like '3.11'. Got {python!r}.")
    return GPU_BASE if gpu else CPU_BASE.format(python=python)


def healthcheck(port: int) -> list[str]:
    """The HEALTHCHECK command: GET /healthz on the server's port, with the image's Python."""
    probe = (
        "import sys, urllib.request; "
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}{HEALTH_PATH}', "
        "timeout=4).status == 200 else 1)"
    )
    return ["python3", "-c", probe]


@dataclass
class BuildSpec:
    """Everything the templates need (one build context)."""

    name: str
    requirements: Requirements
    command: list[str]
    base: str
    gpu: bool = False
    #: The port the command listens on (None: nothing listens; no EXPOSE, no health check).
    port: int | None = DEFAULT_PORT
    #: The served model's name, its framework and manifest file (None: a project).
    model: str | None = None
    framework: str | None = None
    manifest_file: str | None = None
    external: bool = False
    backend_url: str = ""
    origin: str = "forgeml package"
    copy_project: bool = False
    install_project: bool = False
    serve: bool = True
    ignore: list[str] = field(default_factory=list)
    mlproject_parameters: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    mlproject_command: str = ""

    @property
    def image(self) -> str:
        return image_name(self.name)

    def context(self) -> dict[str, Any]:
        files = [
            "requirements.txt",
            *(f"requirements-{f}.txt" for f in self.requirements.frameworks),
        ]
        slug = _IMAGE_CHARS.sub("-", self.name.lower()).strip("-._") or "model"
        return {
            "version": __version__,
            "origin": self.origin,
            "name": self.name,
            "image": self.image,
            "sif": f"{slug}.sif",
            "def_name": f"{slug}.def",
            "base": self.base,
            "gpu": self.gpu,
            "port": self.port,
            "model": self.model,
            "framework": self.framework,
            "manifest_file": self.manifest_file,
            "external": self.external,
            "backend_url": self.backend_url,
            "forgeml_install": self.requirements.install,
            "requirement_files": files,
            "torch_index": TORCH_CPU_INDEX if self.requirements.needs_torch_index else None,
            "copy_project": self.copy_project,
            "install_project": self.install_project,
            "serve": self.serve,
            "command": self.command,
            "healthcheck": healthcheck(self.port) if self.port else [],
            "ignore": self.ignore,
            "parameters": dict(self.mlproject_parameters),
            "entry_command": self.mlproject_command or shlex.join(self.command),
            "docker_env_vars": [],
            "help": (
                f"Serves model {self.model} ({self.framework}) with forgeml serve."
                if self.model
                else f"The {self.name} project, built by forgeml."
            ),
        }


def render(spec: BuildSpec) -> dict[str, str]:
    """File name -> text: Dockerfile, .dockerignore, MLproject, the Apptainer definition and
    the requirement files."""
    env = _jinja()
    context = spec.context()
    files = {
        "Dockerfile": env.get_template("Dockerfile.j2").render(context),
        ".dockerignore": env.get_template("dockerignore.j2").render(context),
        "MLproject": env.get_template("MLproject.j2").render(context),
        context["def_name"]: env.get_template("apptainer.def.j2").render(context),
    }
    files.update(spec.requirements.files)
    return files


def project_files(
    *,
    name: str,
    frameworks: list[str],
    command: list[str],
    gpu: bool = False,
    base: str | None = None,
    python: str | None = None,
    port: int | None = None,
    install_project: bool = False,
) -> dict[str, str]:
    """The build files of a project (no model embedded): file name -> text.

    ``{"Dockerfile", ".dockerignore", "MLproject", "<name>.def", "requirements.txt",
    "requirements-<framework>.txt" (one per framework), "wheels/README.md"}``. The image
    installs forgeml (from the wheel put in ``wheels/``) and the pinned ``frameworks``
    (manifest names or aliases: ``torch``, ``sklearn``, ``onnxruntime``, ...), copies the
    project to ``/app`` and runs ``command`` there as the unprivileged user ``forgeml``.
    ``python`` (default: the running Python's X.Y) picks the CPU base image; the pins come
    from this environment, so a base image of another Python gets a ``UserWarning``.
    ``port`` (when the command serves) is exposed and health-checked at ``/healthz``;
    ``install_project`` also ``pip install``\\ s the project itself (it has a pyproject).
    """
    given: object = command
    if not isinstance(given, list | tuple) or not given:
        raise PackageError(
            f"command must be a non-empty list of arguments, e.g. ['python', '-m', 'train']. "
            f"Got {command!r}."
        )
    base_ref = base_image(gpu=gpu, base=base, python=python)
    warn_python_mismatch(base_ref, chosen=base is not None)
    spec = BuildSpec(
        name=name,
        requirements=requirements(frameworks, gpu=gpu),
        command=[str(c) for c in command],
        base=base_ref,
        gpu=gpu,
        port=port,
        origin="forgeml.package.project_files",
        copy_project=True,
        install_project=install_project,
        serve=False,
        ignore=["mlruns", "outputs", "*.sif", "*.egg-info", "dist", "build"],
    )
    files = render(spec)
    files["wheels/README.md"] = WHEELS_README.format(
        version=__version__, wheel=spec.requirements.wheel
    )
    return files


WHEELS_README = """\
# wheels/

`docker build` installs forgeml from its wheel in this folder, by path (forgeml is not
on PyPI):

    pip wheel --no-deps -w wheels /path/to/forgeml

or let `forgeml package` put one here. The Dockerfile names the wheel of forgeml
{version} (`{wheel}`). Install wheels of your own private packages
the same way, by path (`pip install wheels/NAME-VERSION-....whl`), not with `--find-links`.
"""
