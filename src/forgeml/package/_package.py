"""``forgeml package``: a build context that serves one model (Docker and Apptainer).

Layout of the context (``DIR``)::

    Dockerfile                   multi-stage: builder (pinned wheels) -> slim runtime
    .dockerignore
    requirements.txt             forgeml[serve] and everything it needs, exact versions
    requirements-<framework>.txt the model's framework, exact versions (none: --external)
    wheels/forgeml-*.whl         forgeml itself (not on PyPI): the build needs no source
    model/<name>.yml             the manifest, its weights a path next to it (sha256-pinned)
    model/<weights file>         (embedded only)
    MLproject                    an MLflow project running the image
    <name>.def                   an Apptainer definition of the same image
    package.json                 what was packaged: model, framework, files and sha256

``--force`` (``force=True``) on a folder that is not empty builds the new context in a
temporary folder beside it and swaps it in. What the previous context wrote goes: the
files its ``package.json`` lists, and all of ``model/`` and ``wheels/`` (their content
goes into the image). Every other file there is kept (yours: notes, a CI file); a
file of the same name as one of the new context's is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgeml._core._errors import ForgeMLError, PackageError, did_you_mean
from forgeml._core._files import atomic_write_text, fsync_dir
from forgeml._core._hashing import sha256_file
from forgeml._version import __version__
from forgeml.package._render import (
    DEFAULT_PORT,
    BuildSpec,
    base_image,
    image_name,
    python_mismatch,
    render,
)
from forgeml.package._requirements import requirements

if TYPE_CHECKING:
    from forgeml.eval import Manifest

log = logging.getLogger("forgeml.package")

#: What ``--format`` takes: the model as its manifest says, or its ONNX export.
FORMATS = ("native", "onnx")
#: The record of a build context.
RECORD = "package.json"
#: Where the model lives inside the image.
MODEL_DIR = "/app/model"
#: Folders of a context that belong to forgeml whole (``--force`` replaces them whole).
OWNED_DIRS = ("model", "wheels")
#: What a ``--backend-url`` must not hold: it is written into ENV and shell lines.
_URL_FORBIDDEN = frozenset("\"'`$\\")


@dataclass
class PackageResult:
    """A written build context."""

    path: Path
    model: str
    #: The manifest framework the image serves with (``onnxruntime`` for ``--format onnx``).
    framework: str
    #: ``"embedded"`` or ``"external"``.
    mode: str
    format: str
    gpu: bool
    base: str
    image: str
    #: The framework the model came in, when it was exported for the package.
    exported_from: str | None = None
    #: Relative file name -> sha256, for every file written.
    files: dict[str, str] = field(default_factory=dict)
    #: The pinned distributions: requirement file -> lines.
    requirements: dict[str, list[str]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: What may go wrong when the image is built (e.g. its Python is not the one pinned from).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "forgeml": __version__,
            "created": self.created,
            "path": str(self.path),
            "model": self.model,
            "framework": self.framework,
            "mode": self.mode,
            "format": self.format,
            "exported_from": self.exported_from,
            "gpu": self.gpu,
            "base": self.base,
            "image": self.image,
            "files": dict(self.files),
            "requirements": {k: list(v) for k, v in self.requirements.items()},
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        frameworks = [f for f in self.requirements if f != "requirements.txt"]
        runtime = ", ".join(
            f.removeprefix("requirements-").removesuffix(".txt") for f in frameworks
        )
        how = f"{self.framework}" + (
            f" (exported from {self.exported_from})" if self.exported_from else ""
        )
        lines = [
            f"Wrote the build context of {self.model} ({self.mode}, {how}) to {self.path}",
            f"  base image: {self.base}{'  (GPU)' if self.gpu else ''}",
            "  runtime:    forgeml[serve]" + (f" + {runtime}" if runtime else ""),
            f"  files:      {', '.join(sorted(self.files))}",
            "Build and run it:",
            f"  docker build -t {self.image} {self.path}",
            f"  docker run --rm -p {DEFAULT_PORT}:{DEFAULT_PORT} {self.image}",
        ]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the wheel


def forgeml_source() -> Path | None:
    """The source tree of the running forgeml (an editable or source install), or None."""
    import forgeml

    root = Path(forgeml.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    with contextlib.suppress(OSError):
        if 'name = "forgeml"' in pyproject.read_text(encoding="utf-8"):
            return root
    return None


def build_forgeml_wheel(
    dest: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None
) -> Path:
    """Build forgeml's wheel (``pip wheel --no-deps``) from ``source`` (default: the source
    tree of the running forgeml) into the folder ``dest``; returns the wheel's path."""
    folder = Path(source).expanduser() if source is not None else forgeml_source()
    if folder is None:
        raise PackageError(
            "forgeml is not installed from a source tree here, so its wheel cannot be built. "
            "Pass the wheel with --forgeml-wheel PATH (forgeml_wheel=...), or the source tree "
            "with --forgeml-source DIR."
        )
    if not (folder / "pyproject.toml").is_file():
        raise PackageError(
            f"--forgeml-source must be forgeml's source tree (with pyproject.toml). Got '{folder}'."
        )
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".forgeml-wheel.", dir=out) as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp, str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("forgeml-*.whl"))
        if done.returncode != 0 or not wheels:
            raise PackageError(
                f"Building forgeml's wheel from '{folder}' failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]} HINT: pass a built wheel with "
                f"--forgeml-wheel PATH."
            )
        target = out / wheels[0].name
        os.replace(wheels[0], target)
    return target


def _check_wheel(path: Path) -> Path:
    if not path.is_file() or not path.name.startswith("forgeml-") or path.suffix != ".whl":
        raise PackageError(
            f"--forgeml-wheel must be a forgeml wheel file (forgeml-<version>-...whl). "
            f"Got '{path}'."
        )
    version = path.name.split("-")[1]
    if version != __version__:
        raise PackageError(
            f"The forgeml wheel '{path.name}' is version {version}, but this is forgeml "
            f"{__version__}, whose pins the requirements hold. Build the wheel of this forgeml "
            f"(pip wheel --no-deps -w wheels <forgeml source>) or leave --forgeml-wheel out."
        )
    return path


# ----------------------------------------------------------------------------- the model


def select_manifest(
    model: str | os.PathLike[str], *, framework: str | None, format: str
) -> Manifest:
    """The manifest to package: a manifest file, or the registered model ``model``.

    With ``format="onnx"`` an ``onnxruntime`` manifest of the name is preferred (it is
    packaged as is); otherwise the source is picked and exported.
    """
    from forgeml.eval import canonical_framework, find_manifests, get_manifest, load_manifest

    text = os.fspath(model)
    if text.endswith((".yml", ".yaml")) or os.sep in text or Path(text).is_file():
        manifest = load_manifest(text)
        if framework is not None and canonical_framework(framework) != manifest.framework:
            raise PackageError(
                f"The manifest '{text}' is a {manifest.framework} model; --framework "
                f"{framework} does not apply. Leave --framework out."
            )
        return manifest
    matches = [m for m in find_manifests() if m.name == text]
    if not matches:
        return get_manifest(text)  # the EvalError that lists the known models
    if framework is not None:
        return get_manifest(text, framework)
    if format == "onnx":
        onnx = [m for m in matches if m.framework == "onnxruntime"]
        if onnx:
            return onnx[0]
        convertible = [m for m in matches if m.framework not in ("tensorrt",)]
        if len(convertible) == 1:
            return convertible[0]
    if len(matches) == 1:
        return matches[0]
    have = ", ".join(sorted(m.framework for m in matches))
    raise PackageError(
        f"Model '{text}' exists for several frameworks ({have}). Pick one with --framework, "
        f"or package its ONNX export with --format onnx."
    )


def _export_onnx(manifest: Manifest, folder: Path) -> tuple[Manifest, Path]:
    """The model's ONNX export (checked for parity by forgeml export) in ``folder``."""
    from forgeml.eval import WeightsSpec
    from forgeml.export import export

    out = folder / f"{manifest.name}.onnx"
    try:
        result = export(manifest, to="onnx", output=out, runs=0, register=False, store=False)
    except ForgeMLError as exc:
        raise PackageError(
            f"--format onnx: exporting {manifest.name} ({manifest.framework}) failed: {exc}"
        ) from exc
    attributes = {k: v for k, v in manifest.attributes.items() if k != "allow"}
    attributes["exported_from"] = {"framework": manifest.framework, "by": "forgeml package"}
    exported = replace(
        manifest,
        framework="onnxruntime",
        framework_version=None,
        weights=WeightsSpec(path=result.path.name, format="onnx"),
        attributes=attributes,
    )
    return exported, result.path


def _inline_labels(manifest: Manifest) -> Manifest:
    """Labels written into the manifest itself (a labels_file would not travel)."""
    from forgeml.eval import OutputSpec

    output = manifest.output
    return replace(manifest, output=OutputSpec(type=output.type, labels=output.labels), source=None)


def _write_manifest(manifest: Manifest, path: Path, note: str) -> None:
    from forgeml.eval import dump_manifest

    atomic_write_text(
        path, f"# Written by forgeml package {__version__}: {note}\n" + dump_manifest(manifest)
    )


def _stage_model(
    manifest: Manifest, model_dir: Path, *, format: str, external: bool
) -> tuple[Manifest, str | None]:
    """Write the manifest (and, embedded, the weights) into ``model_dir``."""
    from forgeml.eval import WeightsSpec, resolve_weights

    model_dir.mkdir(parents=True, exist_ok=True)
    exported_from = None
    if format == "onnx" and manifest.framework != "onnxruntime":
        if external:
            raise PackageError(
                "--format onnx converts an embedded model; with --external the model runs at "
                "the backend. Leave --format out, or package it embedded."
            )
        exported_from = manifest.framework
        manifest, _ = _export_onnx(manifest, model_dir)
        weights = model_dir / str(manifest.weights.path)
        manifest = manifest.with_weights(replace(manifest.weights, sha256=sha256_file(weights)))
        _write_manifest(
            _inline_labels(manifest), model_dir / f"{manifest.name}.yml", "exported to ONNX."
        )
        return manifest, exported_from
    if external:
        _write_manifest(
            _inline_labels(manifest),
            model_dir / f"{manifest.name}.yml",
            "served by an external backend (no weights here).",
        )
        return manifest, None
    try:
        weights = resolve_weights(manifest)
    except ForgeMLError as exc:
        raise PackageError(
            f"Cannot embed model {manifest.name} ({manifest.framework}): {exc}"
        ) from exc
    if not weights.is_file():
        raise PackageError(
            f"Model {manifest.name}: its weights '{weights}' are not a single file, which "
            f"forgeml package embeds. Export it to one file (forgeml export) or use --external."
        )
    target = model_dir / weights.name
    shutil.copyfile(weights, target)
    data = weights.with_name(weights.name + ".data")  # ONNX weights stored beside the graph
    if data.is_file():
        shutil.copyfile(data, model_dir / data.name)
    spec = WeightsSpec(
        path=weights.name, sha256=sha256_file(target), format=manifest.weights.format
    )
    manifest = manifest.with_weights(spec)
    _write_manifest(_inline_labels(manifest), model_dir / f"{manifest.name}.yml", "embedded model.")
    return manifest, None


# ----------------------------------------------------------------------------- package


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PackageError(f"-o must be a folder for the build context; '{out}' is a file.")
    if out.is_dir() and any(out.iterdir()) and not force:
        held = sorted(p.name for p in out.iterdir())
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise PackageError(
            f"The output folder '{out}' is not empty (it holds {shown}). Refusing to write a "
            f"build context into it: pick a new folder, or pass --force (force=True) to replace "
            f"the context there (what its package.json lists, model/ and wheels/ go; other "
            f"files are kept)."
        )


def package(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    framework: str | None = None,
    format: str = "native",
    external: bool = False,
    backend_url: str | None = None,
    gpu: bool = False,
    base: str | None = None,
    python: str | None = None,
    port: int = DEFAULT_PORT,
    forgeml_wheel: str | os.PathLike[str] | None = None,
    forgeml_source: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> PackageResult:
    """Write a build context that serves ``model`` to the folder ``output``.

    Args:
        model: a model name (``forgeml models ls``) or a manifest ``.yml`` file.
        output: the folder to write (must be empty or new, unless ``force``).
        framework: which of the name's manifests, when it has several.
        format: ``"native"`` (the manifest's framework) or ``"onnx"``: the model's ONNX
            export (an existing onnxruntime manifest of the name, or exported now),
            served by onnxruntime alone.
        external: write a package without the model, whose server forwards requests to
            ``backend_url`` (or ``FORGEML_SERVE_BACKEND_URL`` at run time).
        gpu: a CUDA runtime base image and the GPU builds of the frameworks.
        base: the base image of both stages (default: ``python:<python>-slim-bookworm``, or
            a CUDA runtime image with ``gpu``).
        python: the Python version of the default CPU base image (default: the running
            Python's X.Y). The pins come from this environment: when the base image's
            Python differs (``--gpu``'s Ubuntu 24.04 has 3.12), a ``UserWarning`` says so
            and the result's ``warnings`` holds it.
        port: the port the server listens on in the image.
        forgeml_wheel: a forgeml wheel to put in ``wheels/``; default: built from
            ``forgeml_source`` (default: the source tree of the running forgeml).
        force: replace the context in a folder that is not empty: the files its
            ``package.json`` lists and all of ``model/`` and ``wheels/`` go, other files
            stay (see the module's docstring).
    """
    if format not in FORMATS:
        raise PackageError(
            f"--format must be one of {', '.join(FORMATS)}. Got {format!r}."
            + did_you_mean(format, FORMATS)
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise PackageError(f"--port must be a TCP port, 1 to 65535. Got {port!r}.")
    if backend_url is not None and not external:
        raise PackageError(
            "--backend-url names the server an --external package forwards to; add --external "
            "(or leave --backend-url out to embed the model)."
        )
    if backend_url is not None:
        check_backend_url(backend_url)
    if forgeml_wheel is not None and forgeml_source is not None:
        raise PackageError("Give --forgeml-wheel or --forgeml-source, not both.")
    wheel = _check_wheel(Path(forgeml_wheel).expanduser()) if forgeml_wheel is not None else None
    out = Path(output).expanduser().absolute()
    _check_output(out, force)
    manifest = select_manifest(model, framework=framework, format=format)
    base_ref = base_image(gpu=gpu, base=base, python=python)
    mismatch = python_mismatch(base_ref, chosen=base is not None)
    if mismatch is not None:
        warnings.warn(mismatch, UserWarning, stacklevel=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder is 0777 - umask
    try:
        served, exported_from = _stage_model(
            manifest, stage / "model", format=format, external=external
        )
        if wheel is not None:
            (stage / "wheels").mkdir(exist_ok=True)
            shutil.copyfile(wheel, stage / "wheels" / wheel.name)
            wheel_file = stage / "wheels" / wheel.name
        else:
            wheel_file = build_forgeml_wheel(stage / "wheels", source=forgeml_source)
        reqs = requirements([] if external else [served.framework], gpu=gpu, wheel=wheel_file.name)
        manifest_file = f"{served.name}.yml"
        spec = BuildSpec(
            name=served.name,
            requirements=reqs,
            command=[
                "forgeml",
                "serve",
                f"{MODEL_DIR}/{manifest_file}",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
            base=base_ref,
            gpu=gpu,
            port=port,
            model=served.name,
            framework=served.framework,
            manifest_file=manifest_file,
            external=external,
            backend_url=backend_url or "",
            origin=f"forgeml package {served.name}" + (" --external" if external else ""),
            ignore=["*.def", "*.sif", "MLproject", RECORD],
            mlproject_parameters={"port": ("string", str(port))},
            mlproject_command=f"forgeml serve model/{manifest_file} --host 0.0.0.0 --port {{port}}",
        )
        for name, text in render(spec).items():
            atomic_write_text(stage / name, text)
        files = {
            str(p.relative_to(stage)): sha256_file(p)
            for p in sorted(stage.rglob("*"))
            if p.is_file()
        }
        result = PackageResult(
            path=out,
            model=served.name,
            framework=served.framework,
            mode="external" if external else "embedded",
            format=format,
            gpu=gpu,
            base=base_ref,
            image=image_name(served.name),
            exported_from=exported_from,
            files=files,
            requirements={
                name: [line for line in text.splitlines() if line and not line.startswith("#")]
                for name, text in reqs.files.items()
            },
            warnings=[mismatch] if mismatch else [],
        )
        atomic_write_text(stage / RECORD, result.to_json() + "\n")
        result.files[RECORD] = sha256_file(stage / RECORD)
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def check_backend_url(url: str) -> str:
    """``url`` when it is an ``http(s)://host[:port][/path]`` URL safe to write into the
    Dockerfile's ENV and the Apptainer definition's shell lines; else a :class:`PackageError`."""
    problem = None
    bad = sorted({c for c in url if c in _URL_FORBIDDEN or c.isspace() or not c.isprintable()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        problem = f"it holds {shown}, which the Dockerfile and the Apptainer script would read"
    else:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            problem = f"it does not parse ({exc})"
        else:
            if parts.scheme not in ("http", "https"):
                problem = f"its scheme is {parts.scheme or 'missing'!r}, not http or https"
            elif not parts.hostname:
                problem = "it names no host"
    if problem is not None:
        raise PackageError(
            f"--backend-url must be an http:// or https:// URL with a host, like "
            f"http://gpu-box:8000, and no spaces, quotes, $ or backslashes; {problem}. "
            f"Got {url!r}."
        )
    return url


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _previous_files(out: Path) -> set[str] | None:
    """The files the previous context in ``out`` wrote (its ``package.json``), or None."""
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
        listed = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict):
        return None
    return {str(name) for name in listed} | {RECORD}


def _kept_files(out: Path) -> list[Path]:
    """The files in ``out`` a new context keeps: not the previous context's (its record's
    files, ``package.json``, everything under ``model/`` and ``wheels/``)."""
    previous = _previous_files(out) or {RECORD}
    kept = []
    for root, dirs, names in os.walk(out):
        here = Path(root)
        if here == out:
            dirs[:] = [d for d in dirs if d not in OWNED_DIRS]
        for name in names:
            path = here / name
            if path.relative_to(out).as_posix() not in previous:
                kept.append(path)
    return sorted(kept)


def _publish(stage: Path, out: Path) -> None:
    """Put the staged context at ``out``: one rename when ``out`` is new or empty; else
    (``--force``) a swap of the folders, the files :func:`_kept_files` names moved over."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(stage, out)
        fsync_dir(out.parent)
        return
    kept = _kept_files(out)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, old / "context")
    try:
        os.replace(stage, out)
    except OSError:
        os.replace(old / "context", out)
        old.rmdir()
        raise
    for path in kept:
        relative = path.relative_to(out)
        source, target = old / "context" / relative, out / relative
        if target.exists() or target.is_symlink():
            log.warning("--force: %s is replaced by the new context's file.", relative)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
