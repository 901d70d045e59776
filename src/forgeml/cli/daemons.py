"""``forgeml ps`` and ``forgeml stop``: daemons started by ``app.run`` with ``-d``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from forgeml._core._errors import CLIError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def ps(as_json: bool) -> None:
    """List running daemons started with -d/--daemon (stale records are removed)."""
    from forgeml.app import list_daemons

    records = list_daemons()
    if as_json:
        click.echo(json.dumps([asdict(r) for r in records], indent=2))
        return
    if not records:
        click.echo("No forgeml daemons are running.")
        return
    from rich.table import Table

    from forgeml._core._format import format_duration
    from forgeml.cli._output import print_table

    table = Table("PID", "NAME", "UPTIME", "CWD", "LOG", box=None)
    now = time.time()
    for r in records:
        table.add_row(str(r.pid), r.name, format_duration(now - r.started), r.cwd, r.logfile)
    print_table(table)


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="PID|NAME...")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait after SIGTERM.",
)
@click.option("--force", is_flag=True, help="SIGKILL daemons still running after the timeout.")
def stop(targets: tuple[str, ...], timeout: float, force: bool) -> None:
    """Stop daemons by pid or program name: SIGTERM, then wait (and SIGKILL with --force)."""
    from forgeml.app import find_daemons, list_daemons, stop_daemon

    failed = []
    for target in targets:
        records = find_daemons(target)
        if not records:
            known = ", ".join(f"{r.pid} ({r.name})" for r in list_daemons()) or "none"
            raise CLIError(f"No running forgeml daemon matches '{target}'. Running: {known}.")
        for record in records:
            if stop_daemon(record, timeout=timeout, force=force):
                click.echo(f"stopped {record.pid} ({record.name})")
            else:
                failed.append(record)
    if failed:
        pids = " ".join(str(r.pid) for r in failed)
        raise CLIError(
            f"Daemon(s) {pids} still running {timeout:g} s after SIGTERM. "
            f"Use 'forgeml stop --force {pids}' to SIGKILL them."
        )
