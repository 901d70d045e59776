"""A manifest's weights as a verified local file: a path, a URL, a Repo object, or the zoo.

- ``path``: relative to the manifest's folder; its ``sha256`` is checked when given.
- ``url``: downloaded with :func:`forgeml.hub.download` (``sha256`` required) into the cache.
- ``repo`` + ``selector``: the one object of a :class:`forgeml.Repo` the selector selects.
- ``zoo``: a built-in model, trained on a bundled dataset the first time it is needed
  and cached under ``<cache>/zoo/<name>/``::

      <name>.dry       the forgeml archive (save_object)
      <name>.onnx      PyTorch models only: the ONNX export (onnxruntime manifests use it)
      build.json       sha256 of each file, versions, seconds, test metrics
      .lock            flock()ed while the model is built (one build at a time)

  Every resolve checks the file against the sha256 in ``build.json``: a file that
  fails is refused (an :class:`~forgeml.EvalError` that says how to rebuild it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError, ForgeMLError, RegistryError, did_you_mean
from forgeml._core._files import atomic_write_text
from forgeml._core._hashing import sha256_file
from forgeml._version import __version__
from forgeml.eval._manifest import Manifest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("forgeml.eval.zoo")

#: The folder of the zoo inside the cache folder.
ZOO_FOLDER = "zoo"
#: The build record of a zoo model.
BUILD_RECORD = "build.json"
#: The layout of a zoo model's folder; a cache of another layout is built again.
ZOO_FORMAT = 1
#: The modules whose versions a build records, per framework.
_VERSIONED = {
    "pytorch": ("torch", "onnx", "onnxruntime"),
    "tensorflow": ("tensorflow", "keras"),
    "sklearn": ("sklearn", "skops"),
    "xgboost": ("xgboost",),
}


# ----------------------------------------------------------------------------- resolving


def resolve_weights(manifest: Manifest, *, force: bool = False) -> Path:
    """The local, verified file of ``manifest``'s weights.

    ``force`` downloads a URL again, and trains a zoo model again. A file whose
    sha256 does not match (the manifest's, or the one recorded when a zoo model
    was built) is refused with :class:`~forgeml.EvalError`.
    """
    weights = manifest.weights
    source = weights.source
    if source == "zoo":
        path = _zoo_file(manifest, force=force)
    elif source == "path":
        path = _path_file(manifest)
    elif source == "url":
        path = _url_file(manifest, force=force)
    else:
        path = _repo_file(manifest)
    if weights.sha256 is not None:
        _verify(manifest, path, weights.sha256, "the manifest's weights.sha256")
    return path


def _where(manifest: Manifest) -> str:
    origin = f", {manifest.source}" if manifest.source is not None else ""
    return f"Model '{manifest.name}' ({manifest.framework}{origin})"


def _base(manifest: Manifest) -> Path:
    """The folder relative paths in a manifest start from."""
    return manifest.source.absolute().parent if manifest.source is not None else Path.cwd()


def _verify(manifest: Manifest, path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise EvalError(
            f"{_where(manifest)}: the weights file '{path}' does not match {what}: its sha256 "
            f"is {actual}, expected {expected}. Refusing to load it: the file was changed or "
            f"damaged, or the checksum is wrong."
        )


def _path_file(manifest: Manifest) -> Path:
    assert manifest.weights.path is not None
    path = Path(manifest.weights.path).expanduser()
    if not path.is_absolute():
        path = _base(manifest) / path
    if not path.is_file():
        reason = "is not a file" if path.exists() else "does not exist"
        raise EvalError(
            f"{_where(manifest)}: the weights file '{path}' {reason}. weights.path is relative "
            f"to the manifest's folder."
        )
    return path


def _url_file(manifest: Manifest, *, force: bool) -> Path:
    from forgeml.hub import download

    assert manifest.weights.url is not None
    try:
        return download(
            manifest.weights.url, sha256=manifest.weights.sha256, force_reload=force, progress=None
        )
    except ForgeMLError as exc:
        raise EvalError(f"{_where(manifest)}: {exc}") from exc


def _repo_file(manifest: Manifest) -> Path:
    from forgeml.objects import Repo, Selector
    from forgeml.store import protocol_of

    weights = manifest.weights
    assert weights.repo is not None
    spec = dict(weights.selector or {})
    location: str | Path = weights.repo
    if "://" not in weights.repo or protocol_of(weights.repo) in ("file", "local"):
        local = Path(weights.repo.removeprefix("file://")).expanduser()
        location = local if local.is_absolute() else _base(manifest) / local
    try:
        repo = Repo(location)
        selector = Selector(spec.get("cls"), spec.get("args"), spec.get("kwargs"))
        entries = repo.get(selector, load_objects=False, tags=spec.get("tags") or ())
    except ForgeMLError as exc:
        raise EvalError(f"{_where(manifest)}: weights.repo: {exc}") from exc
    if len(entries) != 1:
        found = "; ".join(f"{e.dry_id} ({e.cls})" for e in entries[:10])
        more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
        raise EvalError(
            f"{_where(manifest)}: the selector {selector!r} must select exactly one object in "
            f"repo '{location}'; it selects {len(entries)}"
            + (f": {found}{more}" if entries else "")
            + ". Narrow it (kwargs, tags, or dry_id in kwargs)."
        )
    try:
        return entries[0].local_file()
    except ForgeMLError as exc:
        raise EvalError(f"{_where(manifest)}: weights.repo: {exc}") from exc


# ----------------------------------------------------------------------------- the zoo


@dataclass(frozen=True)
class ZooBuild:
    """A built zoo model in the cache: its files, what built it, and how well it scores."""

    name: str
    #: The manifest framework of its archive (pytorch, tensorflow, sklearn, xgboost).
    framework: str
    dataset: str
    folder: Path
    #: File name -> sha256, as recorded when it was built.
    files: Mapping[str, str]
    #: Accuracy (classification) or R² (regression) on the dataset's test part.
    metrics: Mapping[str, float]
    #: Seconds the build took: training, scoring, saving, and the ONNX export and its checks.
    seconds: float
    #: When it was built (UTC, ISO 8601).
    built: str
    #: Versions of forgeml and the frameworks that built it.
    versions: Mapping[str, str] = field(default_factory=dict)
    #: True when this call trained it; False when it came from the cache.
    trained: bool = False

    @property
    def archive(self) -> Path:
        """The forgeml archive (``load_object`` it)."""
        return self.folder / f"{self.name}.dry"

    @property
    def onnx(self) -> Path | None:
        """The ONNX export, for PyTorch models; None for the others."""
        name = f"{self.name}.onnx"
        return self.folder / name if name in self.files else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "framework": self.framework,
            "dataset": self.dataset,
            "folder": str(self.folder),
            "files": dict(self.files),
            "metrics": dict(self.metrics),
            "seconds": self.seconds,
            "built": self.built,
            "versions": dict(self.versions),
        }


def zoo_folder(name: str) -> Path:
    """Where zoo model ``name`` is cached: ``<cache>/zoo/<name>``."""
    from forgeml.store import cache_dir

    return cache_dir() / ZOO_FOLDER / name


def zoo_build(name: str) -> ZooBuild | None:
    """The cached build of zoo model ``name``, or None when it is not built (nothing is trained
    and no framework imported; the files' sha256 is checked when they are resolved)."""
    return _read_record(zoo_folder(_zoo_name(name)))


def build_zoo(
    names: Iterable[str] | None = None, *, force: bool = False, progress: bool = True
) -> list[ZooBuild]:
    """Build zoo models (all of them by default) that are not cached yet; ``force`` rebuilds.

    Returns one :class:`ZooBuild` per name, ``trained=True`` for those trained now.
    ``progress`` shows a progress bar on a terminal; the logger ``forgeml.eval.zoo``
    says (at INFO) what is trained and how long it took.
    """
    from forgeml.eval.zoo import ZOO

    chosen = list(dict.fromkeys(_zoo_name(n) for n in names)) if names else ZOO.names()
    builds: list[ZooBuild] = []
    from rich.console import Console

    console = Console(stderr=True)
    if not progress or not console.is_terminal:
        return [_ensure_built(name, force=force) for name in chosen]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("zoo", total=len(chosen))
        for name in chosen:
            bar.update(task, description=f"zoo: {name}")
            builds.append(_ensure_built(name, force=force))
            bar.advance(task)
    return builds


def _zoo_name(name: str) -> str:
    from forgeml.eval.zoo import ZOO

    try:
        return ZOO.canonical(name)
    except RegistryError:
        known = ZOO.names()
        raise EvalError(
            f"Unknown zoo model '{name}'. Known: {', '.join(known)}." + did_you_mean(name, known)
        ) from None


def _zoo_file(manifest: Manifest, *, force: bool) -> Path:
    assert manifest.weights.zoo is not None
    try:
        name = _zoo_name(manifest.weights.zoo)
    except EvalError as exc:
        raise EvalError(f"{_where(manifest)}: weights.zoo: {exc}") from None
    build = None if force else _read_record(zoo_folder(name))
    if build is None:  # check before training: a model that cannot serve is not built
        from forgeml.eval.zoo import get_builder

        builder = get_builder(name)
        _check_zoo_framework(manifest, name, builder.framework, builder.onnx)
        build = _ensure_built(name, force=force)
    _check_zoo_framework(manifest, name, build.framework, build.onnx is not None)
    onnx = manifest.framework == "onnxruntime"
    path = build.onnx if onnx and build.onnx is not None else build.archive
    if not path.is_file() or sha256_file(path) != build.files[path.name]:
        # A forced rebuild elsewhere may be replacing it: look again once it is done.
        with _locked(build.folder):
            build = _read_record(build.folder) or build
        expected = build.files.get(path.name, "")
        actual = sha256_file(path) if path.is_file() else "(missing)"
        if actual != expected:
            raise EvalError(
                f"{_where(manifest)}: the zoo file '{path}' fails its sha256 check: it is "
                f"{actual}, but {expected} was recorded when it was built. Refusing to load it "
                f"(it was changed or damaged after the build). Build it again: "
                f"forgeml models build --force {name} (or resolve_weights(manifest, force=True))."
            )
    return path


def _check_zoo_framework(manifest: Manifest, name: str, framework: str, has_onnx: bool) -> None:
    if manifest.framework == "onnxruntime":
        if not has_onnx:
            raise EvalError(
                f"{_where(manifest)}: zoo model '{name}' is a {framework} model without an "
                f"ONNX export (only PyTorch zoo models have one). Use its {framework} "
                f"manifest, or export it (forgeml export)."
            )
    elif framework != manifest.framework:
        raise EvalError(
            f"{_where(manifest)}: zoo model '{name}' is a {framework} model, but the "
            f"manifest says {manifest.framework}. Fix the manifest's framework or weights.zoo."
        )


def _ensure_built(name: str, *, force: bool) -> ZooBuild:
    folder = zoo_folder(name)
    if not force:
        cached = _read_record(folder)
        if cached is not None:
            return cached
    with _locked(folder):
        if not force:
            cached = _read_record(folder)  # another process may have built it meanwhile
            if cached is not None:
                return cached
        return _build(name, folder)


def _read_record(folder: Path) -> ZooBuild | None:
    """The build record when it is current and its files exist; None otherwise."""
    try:
        data = json.loads((folder / BUILD_RECORD).read_text(encoding="utf-8"))
        if data.get("format") != ZOO_FORMAT or data.get("forgeml_version") != __version__:
            return None  # built by another forgeml: its classes or recipe may have changed
        build = ZooBuild(
            name=str(data["name"]),
            framework=str(data["framework"]),
            dataset=str(data["dataset"]),
            folder=folder,
            files={str(k): str(v) for k, v in data["files"].items()},
            metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
            built=str(data.get("built", "")),
            versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all((folder / file).is_file() for file in build.files):
        return None
    return build


def _build(name: str, folder: Path) -> ZooBuild:
    from forgeml.eval._bundled import load_bundled
    from forgeml.eval.zoo import get_builder
    from forgeml.objects import save_object

    builder = get_builder(name)
    log.info("Training zoo model %s (%s) on %s:train ...", name, builder.framework, builder.dataset)
    start = time.perf_counter()
    model = builder()
    trained = time.perf_counter() - start
    metrics = builder.evaluate(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUILD_RECORD).unlink(missing_ok=True)  # not built until every file is written
    archive = folder / f"{name}.dry"
    save_object(model, archive)
    files = {archive.name: sha256_file(archive)}
    extra: dict[str, Any] = {}
    if builder.onnx:
        from forgeml.eval.zoo.onnx_export import export_onnx

        onnx_path = folder / f"{name}.onnx"
        batch = builder.inputs(load_bundled(f"{builder.dataset}:test").x)
        extra["onnx_max_abs_diff"] = export_onnx(model, batch, onnx_path)
        files[onnx_path.name] = sha256_file(onnx_path)
    seconds = round(time.perf_counter() - start, 3)
    versions = {"forgeml": __version__, "python": sys.version.split()[0]}
    for module in _VERSIONED.get(builder.framework, ()):
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is not None:
            versions[module] = str(version)
    build = ZooBuild(
        name=name,
        framework=builder.framework,
        dataset=builder.dataset,
        folder=folder,
        files=files,
        metrics=metrics,
        seconds=seconds,
        built=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=versions,
        trained=True,
    )
    record = {
        "format": ZOO_FORMAT,
        "forgeml_version": __version__,
        **build.to_dict(),
        "train_seconds": round(trained, 3),
        **extra,
    }
    del record["folder"]
    atomic_write_text(folder / BUILD_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
    shown = ", ".join(f"{k} {v:g}" for k, v in metrics.items())
    log.info("Built zoo model %s in %.1f s (test %s) in %s", name, seconds, shown, folder)
    return build


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the build lock of a zoo model's folder (an exclusive flock; freed if we die)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def manifest_weights_text(manifest: Manifest) -> str:
    """A short description of where a manifest's weights are, for listings."""
    weights = manifest.weights
    value = {
        "zoo": weights.zoo,
        "path": weights.path,
        "url": weights.url,
        "repo": weights.repo,
    }[weights.source]
    return f"{weights.source}:{value}"


def weights_status(manifest: Manifest) -> dict[str, Any]:
    """Where the weights are now, without downloading or training anything.

    ``{"source": ..., "path": local file or None, "built": bool or None (zoo only)}``.
    """
    weights = manifest.weights
    status: dict[str, Any] = {"source": manifest_weights_text(manifest), "path": None}
    if weights.source == "zoo":
        assert weights.zoo is not None
        try:
            build = zoo_build(weights.zoo)
        except EvalError:
            build = None
        status["built"] = build is not None
        if build is not None:
            path = build.onnx if manifest.framework == "onnxruntime" else build.archive
            status["path"] = str(path) if path is not None else None
            status["build"] = build.to_dict()
    elif weights.source == "path":
        with contextlib.suppress(EvalError):
            status["path"] = str(_path_file(manifest))
    return status
