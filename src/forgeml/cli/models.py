"""``forgeml models``: list, show, add and build model manifests and the built-in zoo."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from forgeml._core._errors import CLIError
from forgeml.cli._output import print_table

if TYPE_CHECKING:
    from forgeml.eval import Manifest


@click.group()
def models() -> None:
    """List, show, add and build models (manifests and the built-in zoo).

    Manifests are found in forgeml's built-in folder, in the folders of
    $FORGEML_MODELS (':'-separated) and in $FORGEML_HOME/models (where
    'forgeml models add' puts them); a later folder overrides an earlier one.

    \b
    Examples:
      forgeml models ls
      forgeml models ls --task image_classification --framework onnxruntime
      forgeml models show digits_cnn --framework pytorch
      forgeml models add my_model.yml
      forgeml models build digits_cnn digits_logreg
    """


@models.command("ls")
@click.option("--task", default=None, metavar="TASK", help="Only models of this task.")
@click.option(
    "--framework", default=None, metavar="NAME", help="Only models of this framework (or alias)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def ls(task: str | None, framework: str | None, as_json: bool) -> None:
    """List the models: name, framework, task, version, weights, and whether a zoo model is built.

    \b
    Examples:
      forgeml models ls
      forgeml models ls --task tabular_regression
      forgeml models ls --framework torch --json
    """
    from forgeml.eval import canonical_framework, find_manifests
    from forgeml.eval._weights import weights_status

    manifests = find_manifests()
    if task is not None:
        manifests = [m for m in manifests if m.task == task]
    if framework is not None:
        wanted = canonical_framework(framework)
        manifests = [m for m in manifests if m.framework == wanted]
    records = [_record(m, weights_status(m)) for m in manifests]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("No models match.")
        return
    from rich.table import Table

    table = Table("NAME", "FRAMEWORK", "TASK", "VERSION", "WEIGHTS", "BUILT", box=None)
    for r in records:
        built = "-" if r["built"] is None else ("yes" if r["built"] else "no")
        table.add_row(r["name"], r["framework"], r["task"], r["version"], r["weights"], built)
    print_table(table)


@models.command("show")
@click.argument("name")
@click.option(
    "--framework", default=None, metavar="NAME", help="The framework, when NAME has several."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: manifest, file, weights.")
def show(name: str, framework: str | None, as_json: bool) -> None:
    """Show a model's manifest, the file it came from and where its weights are.

    Nothing is downloaded or trained: a zoo model that is not built yet says so.

    \b
    Examples:
      forgeml models show digits_logreg
      forgeml models show iris_classifier --framework sklearn --json
    """
    from forgeml.eval import get_manifest
    from forgeml.eval._weights import weights_status

    manifest = get_manifest(name, framework, pick="pick one with --framework")
    status = weights_status(manifest)
    if as_json:
        record = {
            "manifest": manifest.to_dict(),
            "file": str(manifest.source) if manifest.source else None,
            "weights": status,
        }
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"# {manifest.source}")
    click.echo(_yaml(manifest.to_dict()).rstrip())
    click.echo("# weights")
    click.echo(f"#   source: {status['source']}")
    if status.get("built") is False:
        click.echo(f"#   not built yet: forgeml models build {manifest.weights.zoo}")
    if status["path"] is not None:
        click.echo(f"#   file: {status['path']}")
    build = status.get("build")
    if build:
        metrics = ", ".join(f"{k} {v:g}" for k, v in build["metrics"].items())
        click.echo(f"#   built: {build['built']} in {build['seconds']:.1f} s; test {metrics}")


@models.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def add(file: str) -> None:
    """Validate a manifest and copy it into $FORGEML_HOME/models.

    Relative paths in it (weights.path, a local weights.repo, output.labels_file)
    start from FILE's folder; the copy makes them absolute (labels from a file are
    written into the copy), so the weights stay where they are and are not copied.
    A model with the same name and framework is replaced.

    \b
    Examples:
      forgeml models add models/resnet_tiny.yml
      FORGEML_HOME=~/project/.forgeml forgeml models add my_model.yml
    """
    from forgeml._core._env import forgeml_home
    from forgeml._core._files import atomic_write_text
    from forgeml.eval import dump_manifest, find_manifests, load_manifest

    manifest = load_manifest(file)
    previous = next((m for m in find_manifests() if m.key == manifest.key), None)
    models_dir = forgeml_home() / "models"
    target = models_dir / f"{manifest.name}.{manifest.framework}.yml"
    # The manifest's name and framework are checked to be plain names; stay in the folder.
    if target.resolve().parent != models_dir.resolve():
        raise CLIError(
            f"Refusing to add {file}: its name '{manifest.name}' and framework "
            f"'{manifest.framework}' would write {target}, outside {models_dir}."
        )
    header = f"# Added by 'forgeml models add' from {manifest.source}\n"
    atomic_write_text(target, header + dump_manifest(_portable(manifest)))
    click.echo(f"added {manifest.name} ({manifest.framework}) as {target}")
    if previous is not None and previous.source not in (target, manifest.source):
        click.echo(f"it overrides {previous.source}")


@models.command("build")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True, help="Train again even when the model is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def build(names: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Train built-in zoo models now (all of them without NAME) and cache them.

    NAME is a zoo model (digits_cnn, iris_torch, ...) or the name of a model whose
    manifest has zoo weights (iris_classifier builds each framework's model).
    Models already cached are kept unless --force is given.

    \b
    Examples:
      forgeml models build digits_logreg
      forgeml models build iris_classifier
      forgeml models build --force digits_cnn
      FORGEML_CACHE=/scratch/cache forgeml models build
    """
    from forgeml.eval._weights import build_zoo

    chosen = _zoo_names(names)
    with _zoo_log():
        builds = build_zoo(chosen or None, force=force, progress=not as_json)
    if as_json:
        click.echo(json.dumps([{**b.to_dict(), "trained": b.trained} for b in builds], indent=2))
        return
    for b in builds:
        metrics = ", ".join(f"{k} {v:g}" for k, v in b.metrics.items())
        what = f"trained in {b.seconds:.1f} s" if b.trained else "cached"
        click.echo(f"{b.name:<22} {b.framework:<11} {what:<18} test {metrics:<16} {b.folder}")


# ----------------------------------------------------------------------------- helpers


def _zoo_names(names: tuple[str, ...]) -> list[str]:
    """Zoo builder names for NAMEs that are builders or models with zoo weights."""
    from forgeml._core._errors import did_you_mean
    from forgeml.eval import find_manifests
    from forgeml.eval.zoo import ZOO

    chosen: list[str] = []
    manifests = find_manifests() if names else []
    for name in names:
        if name in ZOO:
            chosen.append(ZOO.canonical(name))
            continue
        zoo = [m.weights.zoo for m in manifests if m.name == name and m.weights.zoo]
        if not zoo:
            known = sorted({*ZOO.names(), *(m.name for m in manifests if m.weights.zoo)})
            raise CLIError(
                f"'{name}' is neither a zoo model nor a model with zoo weights. Known: "
                f"{', '.join(known)}." + did_you_mean(name, known)
            )
        chosen += [z for z in zoo if z is not None]
    return list(dict.fromkeys(chosen))


def _portable(manifest: Manifest) -> Manifest:
    """The manifest with absolute weight paths and labels inline, to be copied elsewhere."""
    from dataclasses import replace

    from forgeml.store import protocol_of

    base = manifest.source.parent if manifest.source is not None else Path.cwd()
    weights = manifest.weights
    if weights.path is not None and not Path(weights.path).expanduser().is_absolute():
        weights = replace(weights, path=str((base / weights.path).resolve()))
    repo = weights.repo
    if repo is not None and ("://" not in repo or protocol_of(repo) in ("file", "local")):
        local = Path(repo.removeprefix("file://")).expanduser()
        if not local.is_absolute():
            weights = replace(weights, repo=str((base / local).resolve()))
    output = manifest.output
    if output.labels_file is not None:
        output = replace(output, labels_file=None)
    return replace(manifest, weights=weights, output=output)


def _record(manifest: Manifest, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "framework": manifest.framework,
        "task": manifest.task,
        "version": manifest.version,
        "weights": status["source"],
        "built": status.get("built"),
        "path": status["path"],
        "file": str(manifest.source) if manifest.source else None,
        "description": manifest.description,
    }


@contextlib.contextmanager
def _zoo_log() -> Iterator[None]:
    """Show the zoo's messages (what is trained, how long it took) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("forgeml.eval.zoo")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _yaml(data: Any) -> str:
    """YAML with lists of plain values on one line (shapes, means, labels)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
        flat = all(not isinstance(i, dict | list) for i in items)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)

    Dumper.add_representer(list, represent_list)
    text: str = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    return text
