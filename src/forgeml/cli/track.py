"""``forgeml track``: the tracking store in use, and pushing offline runs to their server."""

from __future__ import annotations

import json

import click

from forgeml._core._errors import CLIError


@click.group()
def track() -> None:
    """The tracking store, and runs recorded offline.

    \b
    Examples:
      forgeml track uri
      forgeml track sync --dry-run
      forgeml track sync --uri http://mlflow.example.org:5000
    """


@track.command("uri")
def uri() -> None:
    """Print the tracking URI in effect (MLFLOW_TRACKING_URI, else the embedded store)."""
    from forgeml.track import tracking_uri

    click.echo(tracking_uri())


@track.command("sync")
@click.option(
    "--uri",
    "target",
    default=None,
    metavar="URI",
    help="Push to this server instead of the one each run was meant for.",
)
@click.option("--dry-run", is_flag=True, help="List the runs that would be pushed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def sync(target: str | None, dry_run: bool, as_json: bool) -> None:
    """Push runs recorded offline (their server was unreachable) to the tracking server.

    Params, metrics with their steps and times, tags, artifacts, registered models
    and the final status are replayed; a synced run is marked so and not pushed
    again. Runs whose process is still recording are skipped; runs whose server
    cannot be reached stay queued (the exit status is then 1).

    \b
    Examples:
      forgeml track sync
      forgeml track sync --uri http://127.0.0.1:5000 --json
    """
    from forgeml.track import sync as push

    results = push(target, dry_run=dry_run)
    failed = [r for r in results if r["state"] == "failed"]
    if as_json:
        click.echo(json.dumps(results, indent=2))
        if failed:
            raise SystemExit(1)
        return
    if not results:
        click.echo("Nothing to sync: no offline runs are waiting.")
        return
    for r in results:
        if r["state"] == "synced":
            click.echo(
                f"synced {r['local_run_id']} -> run {r['run_id']} at {r['uri']} "
                f"(experiment {r['experiment']})"
            )
        elif r["state"] == "pending":
            click.echo(
                f"would sync {r['local_run_id']} to {r['uri']} (experiment {r['experiment']})"
            )
        elif r["state"] == "running":
            click.echo(f"skipped {r['local_run_id']}: its process is still recording it")
        else:
            click.echo(f"failed {r['local_run_id']}: {r['error']}")
    if failed:
        raise CLIError(f"{len(failed)} of {len(results)} offline run(s) could not be synced.")
