"""``forgeml report``: stored evaluations as one self-contained HTML page of plots and tables."""

from __future__ import annotations

from typing import Any

import click

from forgeml.cli.results import _filters


@click.command("report")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_filters
@click.option(
    "--last", "-n", "last", type=click.IntRange(min=1), metavar="N", default=None,
    help="Only the newest N matching evaluations (each one, not one per configuration).",
)  # fmt: skip
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every matching evaluation; default: the newest per configuration.",
)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    default="report.html",
    show_default=True,
    help="Where to write the page (atomically).",
)
@click.option(
    "--title", metavar="TEXT", default="forgeml evaluation report", help="The page's title."
)
@click.option(
    "--phase",
    type=click.Choice(["predict", "total", "preprocess", "postprocess"]),
    default="predict",
    show_default=True,
    help="The latency the plots show.",
)
def report(
    ids: tuple[str, ...],
    last: int | None,
    every: bool,
    output: str,
    title: str,
    phase: str,
    **filters: Any,
) -> None:
    """Write an HTML report of stored evaluations: plots and comparison tables.

    The page is self-contained (inline SVG plots and CSS; no scripts, nothing
    fetched): accuracy vs p50 latency, throughput vs batch size, latency
    distributions (percentile boxes from the stored statistics), the tables of
    'forgeml results compare' across frameworks and batch sizes, every
    evaluation's figures, warnings, and provenance (machines, versions, commits).

    Select evaluations like 'forgeml results ls': IDs (or unique prefixes), or
    filters (--model, --framework, --agent, --task, --dataset, --batch-size,
    --device). By default the newest evaluation of each configuration (model,
    framework, agent, dataset, batch size, device) is shown; --all shows every
    one, --last N the newest N.

    \b
    Examples:
      forgeml report -o report.html
      forgeml report --dataset digits --batch-size 64
      forgeml report --model digits_cnn --all -o digits_cnn.html
      forgeml report 3f2a9c1e 81b0d2aa --title "CNN: torch vs ONNX"
      forgeml report --last 10
    """
    from forgeml.cli.results import _db, _select
    from forgeml.eval import write_report
    from forgeml.eval._report import newest_per_configuration

    chosen_by = [f"{k.replace('_', ' ')}={v}" for k, v in filters.items() if v is not None]
    if ids:
        if chosen_by or last is not None:
            raise click.UsageError("Give evaluation IDs, or filters and --last, not both.")
        db = _db()
        results = [db.get(i) for i in ids]
        selection = f"{len(ids)} evaluation(s) by id"
    elif last is not None:
        results = _select(limit=last, newest_first=True, **filters)[::-1]
        selection = f"the newest {last}" + (f" with {', '.join(chosen_by)}" if chosen_by else "")
    else:
        found = _select(**filters)
        results = found if every else newest_per_configuration(found)
        what = "every evaluation" if every else "the newest evaluation of each configuration"
        selection = what + (f" with {', '.join(chosen_by)}" if chosen_by else "")
    if not results:
        raise click.ClickException(
            f"No evaluations match in {_db().path}. List them with 'forgeml results ls'."
        )
    path = write_report(results, output, title=title, phase=phase, selection=selection)
    click.echo(f"wrote {path} ({len(results)} evaluation(s), {path.stat().st_size:,} bytes)")
