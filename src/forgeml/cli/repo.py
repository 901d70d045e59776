"""``forgeml repo``: list, show and remove objects stored in a :class:`forgeml.Repo`."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

import click

from forgeml._core._errors import CLIError
from forgeml.cli._output import print_table

if TYPE_CHECKING:
    from forgeml.objects import Repo, RepoEntry

_CLASS_HELP = "Only objects of this class or a subclass: a class path 'pkg.mod:Name' or a name."
_SUMMARY_WIDTH = 60


@click.group()
def repo() -> None:
    """List, show and remove objects stored in a Repo directory.

    \b
    Examples:
      forgeml repo ls runs/models
      forgeml repo ls runs/models --class Model --json
      forgeml repo show runs/models 3f2a9c1e
      forgeml repo rm runs/models --class mypkg.models:Model --yes
    """


@repo.command("ls")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--class", "cls", metavar="CLASS", default=None, help=_CLASS_HELP)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only objects with this tag.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def ls(directory: str, cls: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List the objects in the repo at DIRECTORY (read from its index; no archive is opened).

    \b
    Examples:
      forgeml repo ls runs/models
      forgeml repo ls runs/models --class mypkg.models:Model --tag best
      forgeml repo ls runs/models --json | jq '.[].dry_id'
    """
    entries = _open(directory).get(_selector(cls), load_objects=False, tags=tags)
    if as_json:
        click.echo(json.dumps([_record(e) for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"No objects{' of class ' + cls if cls else ''} in {directory}.")
        return
    from rich.table import Table

    table = Table("ID", "CLASS", "ARGS", "TAGS", "CREATED", box=None)
    for e in entries:
        created = e.created.isoformat(sep=" ", timespec="seconds").replace("+00:00", "Z")
        table.add_row(e.dry_id, e.cls, _summarize(e.encoded), ",".join(e.tags), created)
    print_table(table)


@repo.command("show")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("dry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: index entry, manifest, files.")
def show(directory: str, dry_id: str, as_json: bool) -> None:
    """Show one object's archive: its definition, state files and their sizes.

    ID is an object id or a unique prefix of one (at least 4 characters).

    \b
    Examples:
      forgeml repo show runs/models 3f2a9c1e
      forgeml repo show runs/models 3f2a9c1e-77d0-4a51-9a8e-0d5b7a1c2e44 --json
    """
    import zipfile

    from forgeml.objects import read_manifest

    entry = _open(directory).entry(dry_id)
    if not entry.file.is_file():
        raise CLIError(
            f"The index lists object {entry.dry_id} in '{entry.file}', but that file is "
            f"missing. Remove the stale entry with 'forgeml repo rm {directory} {entry.dry_id}'."
        )
    manifest = read_manifest(entry.file)
    with zipfile.ZipFile(entry.file) as zf:
        members: list[dict[str, Any]] = [
            {"name": i.filename, "size": i.file_size, "compressed_size": i.compress_size}
            for i in zf.infolist()
        ]
    if as_json:
        record = {
            **_record(entry),
            "size": entry.file.stat().st_size,
            "manifest": manifest,
            "members": members,
        }
        click.echo(json.dumps(record, indent=2))
        return
    obj = manifest["object"]
    kwargs = {k: v for k, v in obj.get("kwargs", {}).items() if k != "dry_id"}
    lines = [
        ("id", entry.dry_id),
        ("class", entry.cls),
        ("mro", ", ".join(obj.get("mro", entry.mro))),
        ("tags", ", ".join(entry.tags) or "-"),
        ("created", entry.created.isoformat(timespec="seconds")),
        ("file", f"{entry.file} ({_size(entry.file.stat().st_size)})"),
        (
            "format",
            f"{manifest['format']} v{manifest['format_version']} "
            f"(forgeml {manifest.get('forgeml_version', '?')})",
        ),
        ("args", ", ".join(_describe(a) for a in obj.get("args", [])) or "-"),
        ("kwargs", ", ".join(f"{k}={_describe(v)}" for k, v in kwargs.items()) or "-"),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<9} {value}")
    click.echo("files:")
    if not members:
        click.echo("  (only the manifest)")
        return
    from rich.table import Table

    table = Table("  NAME", "SIZE", "STORED", box=None)
    for m in members:
        table.add_row(f"  {m['name']}", _size(m["size"]), _size(m["compressed_size"]))
    print_table(table)


@repo.command("rm")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--class", "cls", metavar="CLASS", default=None, help=_CLASS_HELP)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="With --class: only this tag.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before removing by class.")
def rm(
    directory: str, ids: tuple[str, ...], cls: str | None, tags: tuple[str, ...], yes: bool
) -> None:
    """Remove objects by id (or unique prefix), or every object of a class.

    Removing by --class asks for confirmation unless --yes is given.

    \b
    Examples:
      forgeml repo rm runs/models 3f2a9c1e 81b0d2aa
      forgeml repo rm runs/models --class mypkg.models:Model --tag scratch --yes
    """
    if not ids and cls is None:
        raise click.UsageError("Give object IDs to remove, or --class CLASS.")
    if tags and cls is None:
        raise click.UsageError("--tag narrows --class; give --class as well.")
    store = _open(directory)
    chosen = {store.entry(i).dry_id: None for i in ids}  # every id checked before removing any
    if cls is not None:
        selected = store.get(_selector(cls), load_objects=False, tags=tags)
        if not selected and not ids:
            click.echo(f"No objects of class {cls} in {directory}.")
            return
        if selected and not yes:
            click.confirm(
                f"Remove {len(selected)} object(s) of class {cls} from {directory}?",
                abort=True,
            )
        chosen.update({e.dry_id: None for e in selected})
    removed = sum(store.delete(i) for i in chosen)
    click.echo(f"removed {removed} object(s)")


# ----------------------------------------------------------------------------- helpers


def _open(directory: str) -> Repo:
    from forgeml.objects import Repo

    return Repo(directory)


def _selector(cls: str | None) -> Any:
    from forgeml.objects import Selector

    return Selector(cls)


def _record(entry: RepoEntry) -> dict[str, Any]:
    return {
        "dry_id": entry.dry_id,
        "cls": entry.cls,
        "args": entry.encoded.get("args", []),
        "kwargs": {k: v for k, v in entry.encoded.get("kwargs", {}).items() if k != "dry_id"},
        "tags": list(entry.tags),
        "created": entry.created.isoformat(),
        "file": str(entry.file),
    }


def _summarize(encoded: dict[str, Any], width: int = _SUMMARY_WIDTH) -> str:
    """A short text of an encoded definition's arguments (``dry_id`` left out)."""
    parts = [_describe(a) for a in encoded.get("args", [])]
    parts += [f"{k}={_describe(v)}" for k, v in encoded.get("kwargs", {}).items() if k != "dry_id"]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe(value: Any) -> str:
    """An encoded value, written like Python, without decoding or importing anything."""
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    if not isinstance(value, dict) or len(value) != 1:
        return repr(value)
    ((tag, payload),) = value.items()
    if tag == "__tuple__":
        inner = ", ".join(_describe(v) for v in payload)
        return f"({inner}{',' if len(payload) == 1 else ''})"
    if tag == "__set__":
        return "{" + ", ".join(_describe(v) for v in payload) + "}" if payload else "set()"
    if tag == "__dict__":
        return "{" + ", ".join(f"{_describe(k)}: {_describe(v)}" for k, v in payload) + "}"
    if tag in ("__object__", "__objectdef__") and isinstance(payload, dict):
        name = str(payload.get("cls", "?")).partition(":")[2]
        return f"{name}({_summarize(payload, width=10_000)})"
    if tag == "__ndarray__":
        return _array_text(payload)
    if tag == "__npscalar__":
        return "numpy scalar"
    if tag == "__class__":
        return str(payload).partition(":")[2]
    if tag == "__enum__":
        return f"{str(payload[0]).partition(':')[2]}({_describe(payload[1])})"
    if tag == "__path__":
        return f"Path({payload!r})"
    if tag == "__bytes__":
        return f"bytes[{len(payload) * 3 // 4}]"
    if tag == "__float__":
        return str(payload)
    return json.dumps(value)[:40]


def _array_text(payload: Any) -> str:
    """``array(float64, shape=(3,))`` from the .npy header, without decoding the data."""
    try:
        header = base64.b64decode(str(payload)[:344]).decode("latin-1")
    except ValueError:
        return "array"
    shape = re.search(r"'shape': (\([^)]*\))", header)
    descr = re.search(r"'descr': '([^']*)'", header)
    if not shape or not descr:
        return "array"
    kinds = {"f": "float", "i": "int", "u": "uint", "b": "bool", "c": "complex"}
    code = descr.group(1).lstrip("<>|=")
    dtype = (
        f"{kinds[code[0]]}{int(code[1:]) * 8}" if code[:1] in kinds and code[1:].isdigit() else code
    )
    if dtype == "bool8":
        dtype = "bool"
    return f"array({dtype}, shape={shape.group(1)})"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
