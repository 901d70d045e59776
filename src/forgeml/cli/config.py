"""``forgeml config``: inspect configuration files."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Inspect hierarchical YAML configuration files."""


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Refuse includes that resolve outside this directory.",
)
def show(file: str, overrides: tuple[str, ...], as_json: bool, root: str | None) -> None:
    """Print FILE with includes, imports and KEY=VALUE overrides resolved.

    \b
    Examples:
      forgeml config show configs/app.yml
      forgeml config show configs/app.yml log.priority=2 --json
    """
    from forgeml.config import load

    cfg = load(file, *overrides, root=root)
    click.echo(cfg.dump("json" if as_json else "yaml"), nl=False)
