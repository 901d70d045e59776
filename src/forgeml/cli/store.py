"""``forgeml store``: list, copy, remove and size files at any URL (paths, s3://, memory://)."""

from __future__ import annotations

import json

import click

from forgeml.cli._output import print_table

_PROGRESS_HELP = "Show a progress bar for transfers over 8 MB (default: when stderr is a terminal)."


@click.group()
def store() -> None:
    """List, copy, remove and size files at a path or URL (s3://, file://, any fsspec URL).

    S3 credentials and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    and S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) for MinIO/SeaweedFS servers.

    \b
    Examples:
      forgeml store ls s3://bucket/datasets/
      forgeml store put --recursive data/ s3://bucket/datasets/v1
      forgeml store get s3://bucket/models/best.safetensors checkpoints/
      forgeml store du s3://bucket/datasets --json
      forgeml store rm --recursive s3://bucket/scratch
    """


@store.command("ls")
@click.argument("url")
@click.option("--recursive", "-r", is_flag=True, help="List every file below URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def ls(url: str, recursive: bool, as_json: bool) -> None:
    """List the files and folders at URL (a folder, prefix or file).

    \b
    Examples:
      forgeml store ls data/
      forgeml store ls -r s3://bucket/datasets/v1
      forgeml store ls s3://bucket --json | jq '.[].url'
    """
    from forgeml.store import ls as list_url

    entries = list_url(url, recursive=recursive)
    if as_json:
        click.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"Nothing in {url}.")
        return
    from rich.table import Table

    table = Table("SIZE", "MODIFIED", "URL", box=None)
    for e in entries:
        modified = e.modified.strftime("%Y-%m-%d %H:%M:%S") if e.modified else "-"
        table.add_row(
            "-" if e.is_dir else _size(e.size), modified, e.url + ("/" if e.is_dir else "")
        )
    print_table(table)


@store.command("get")
@click.argument("url")
@click.argument("dest", required=False, default=".", type=click.Path())
@click.option("--recursive", "-r", is_flag=True, help="Copy a folder/prefix with its contents.")
@click.option("--progress/--no-progress", default=None, help=_PROGRESS_HELP)
def get(url: str, dest: str, recursive: bool, progress: bool | None) -> None:
    """Download URL to DEST (default: the current folder).

    A file lands at DEST, or inside DEST when it is a folder; a folder needs
    --recursive and is copied to DEST.

    \b
    Examples:
      forgeml store get s3://bucket/models/best.safetensors
      forgeml store get s3://bucket/models/best.safetensors weights.safetensors
      forgeml store get -r s3://bucket/datasets/v1 data/v1
    """
    from forgeml.store import get as download

    target = download(url, dest, recursive=recursive, progress=progress)
    click.echo(f"{url} -> {target}")


@store.command("put")
@click.argument("source", type=click.Path(exists=True))
@click.argument("url")
@click.option("--recursive", "-r", is_flag=True, help="Upload a folder with its contents.")
@click.option("--progress/--no-progress", default=None, help=_PROGRESS_HELP)
def put(source: str, url: str, recursive: bool, progress: bool | None) -> None:
    """Upload the file or folder SOURCE to URL.

    A file goes to URL, or inside it when URL ends with '/' or is a folder; a
    folder needs --recursive and its files go below URL.

    \b
    Examples:
      forgeml store put weights.safetensors s3://bucket/models/
      forgeml store put -r data/ s3://bucket/datasets/v1
    """
    from forgeml.store import put as upload

    written = upload(source, url, recursive=recursive, progress=progress)
    click.echo(f"{source} -> {written}")


@store.command("rm")
@click.argument("url")
@click.option("--recursive", "-r", is_flag=True, help="Remove a folder/prefix with its contents.")
def rm(url: str, recursive: bool) -> None:
    """Remove the file at URL, or a folder/prefix with --recursive.

    Removing everything in s3://BUCKET empties the bucket; the bucket stays.

    \b
    Examples:
      forgeml store rm s3://bucket/models/old.safetensors
      forgeml store rm -r s3://bucket/scratch
    """
    from forgeml.store import rm as remove

    removed = remove(url, recursive=recursive)
    click.echo(f"removed {removed} file(s)")


@store.command("du")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help='Print {"url", "bytes", "files"}.')
def du(url: str, as_json: bool) -> None:
    """Total size and number of the files at or below URL.

    \b
    Examples:
      forgeml store du data/
      forgeml store du s3://bucket/datasets --json
    """
    from forgeml.store._ops import _usage

    total, files = _usage(url)
    if as_json:
        click.echo(json.dumps({"url": url, "bytes": total, "files": files}))
        return
    click.echo(f"{_size(total)}\t{files} file(s)\t{url}")


# ----------------------------------------------------------------------------- helpers


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
