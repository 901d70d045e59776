"""``forgeml results``: list, show, compare and export stored evaluations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from forgeml.cli._output import print_table

if TYPE_CHECKING:
    from forgeml.eval import EvalResult

F = TypeVar("F", bound=Callable[..., Any])


def _filters(fn: F) -> F:
    """The options that select evaluations, each also spelled with underscores."""
    options = [
        click.option("--model", "--model-name", "--model_name", "model", metavar="NAME"),
        click.option("--framework", metavar="NAME"),
        click.option("--agent", metavar="NAME"),
        click.option("--task", metavar="NAME"),
        click.option("--dataset", "--dataset-name", "--dataset_name", "dataset", metavar="NAME"),
        click.option("--batch-size", "--batch_size", "batch_size", type=int, metavar="N"),
        click.option("--device", metavar="DEVICE", help="cpu or cuda:N."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _db() -> Any:
    from forgeml.eval import ResultsDB

    return ResultsDB()


def _select(limit: int | None = None, newest_first: bool = False, **filters: Any) -> list[Any]:
    if filters.get("framework"):
        from forgeml.eval import canonical_framework

        filters["framework"] = canonical_framework(filters["framework"])
    return list(_db().select(limit=limit, newest_first=newest_first, **filters))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


@click.group()
def results() -> None:
    """List, show, compare and export evaluations stored by 'forgeml eval'.

    The database is FORGEML_HOME/results.db (default ./.forgeml/results.db).

    \b
    Examples:
      forgeml results ls
      forgeml results ls --model digits_cnn --json
      forgeml results show 3f2a9c1e
      forgeml results compare --model digits_cnn --by framework
      forgeml results compare 3f2a9c1e 81b0d2aa --baseline 81b0d2aa
      forgeml results export --csv -o results.csv
    """


@results.command("ls")
@_filters
@click.option("--limit", "-n", type=int, default=None, help="Only the newest N evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def ls(limit: int | None, as_json: bool, as_csv: bool, **filters: Any) -> None:
    """List stored evaluations, oldest first, with their headline figures.

    \b
    Examples:
      forgeml results ls
      forgeml results ls --model digits_cnn --batch_size 64 -n 5
    """
    from forgeml.eval._results import main_metric, summary_row, to_csv, to_json

    found = _select(limit=limit, newest_first=limit is not None, **filters)
    if limit is not None:
        found.reverse()
    if as_json or as_csv:
        rows = [summary_row(r) for r in found]
        click.echo(to_json(rows) if as_json else to_csv(rows), nl=as_json)
        return
    if not found:
        click.echo(f"No evaluations in {_db().path}.")
        return
    from rich.table import Table

    table = Table(
        "ID", "CREATED", "MODEL", "AGENT", "DATASET", "BATCH", "DEVICE", "P50 MS",
        "SAMPLES/S", "METRIC", box=None,
    )  # fmt: skip
    for r in found:
        metric = main_metric(r)
        predict = r.latency.get("predict")
        table.add_row(
            r.id[:12],
            r.created[:19].replace("T", " "),
            r.model,
            r.agent,
            r.dataset,
            str(r.batch_size),
            r.device,
            _num(predict.p50 if predict else None),
            _num(r.throughput, 1),
            f"{metric[0]}={metric[1]:.4f}" if metric else "-",
        )
    print_table(table)


@results.command("show")
@click.argument("eval_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def show(eval_id: str, as_json: bool) -> None:
    """Show one evaluation: summary, metrics and provenance.

    ID is an evaluation id or a unique prefix of one (at least 4 characters).

    \b
    Examples:
      forgeml results show 3f2a9c1e
      forgeml results show 3f2a9c1e --json | jq .provenance
    """
    result = _db().get(eval_id)
    if as_json:
        click.echo(result.to_json())
        return
    print_table(result.renderable())
    _print_provenance(result)


def _print_provenance(result: EvalResult) -> None:
    p = result.provenance
    cpu = p.get("cpu") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items())
    threads = ", ".join(f"{k}={v}" for k, v in (p.get("threads") or {}).items())
    commit = p.get("git_commit")
    lines = [
        ("id", result.id),
        ("created", result.created),
        ("host", p.get("host", "-")),
        (
            "cpu",
            f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} logical, "
            f"{cpu.get('usable_cores', '?')} usable cores)",
        ),
        ("gpu", p.get("gpu") or "none"),
        ("versions", versions or "-"),
        ("threads", threads or "-"),
        ("git", f"{commit}{' (uncommitted changes)' if p.get('git_dirty') else ''}"
         if commit else "-"),
    ]  # fmt: skip
    if result.output_file:
        lines.append(("outputs", result.output_file))
    if result.tracking_run_id:
        lines.append(("mlflow run", result.tracking_run_id))
    click.echo("")
    for key, value in lines:
        click.echo(f"{key + ':':<10} {value}")
    for problem in result.problems[:20]:
        click.echo(f"problem:   {problem}")


@results.command("compare")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_filters
@click.option(
    "--by",
    type=click.Choice(["framework", "agent", "batch_size", "device"]),
    default=None,
    help="What varies between the rows lined up (default: the first of these that differs). "
    "framework/agent: groups of equal model, dataset, batch size and device; batch_size/device: "
    "groups of equal model, framework, agent, dataset (and device or batch size).",
)
@click.option("--baseline", metavar="ID", default=None, help="The row the ratios are against.")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every matching evaluation; default: the newest per configuration.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def compare(
    ids: tuple[str, ...],
    by: str | None,
    baseline: str | None,
    every: bool,
    as_json: bool,
    as_csv: bool,
    **filters: Any,
) -> None:
    """Line evaluations up side by side, with ratios against a baseline.

    Give evaluation IDs (the first is the baseline unless --baseline says
    otherwise), or filters such as --model: then the newest evaluation of each
    configuration (model, framework, agent, dataset, batch size, device) is
    compared, oldest first. THROUGHPUT x is throughput ÷ the baseline's; SPEEDUP
    is the baseline's p50 predict latency ÷ this row's (above 1: faster); METRIC
    is the main accuracy figure and DELTA its change from the baseline.

    \b
    Examples:
      forgeml results compare --model digits_cnn --by framework
      forgeml results compare --model digits_cnn --agent pytorch --by batch_size
      forgeml results compare 3f2a9c1e 81b0d2aa --json
    """
    from forgeml.eval import compare as line_up
    from forgeml.eval._results import to_csv, to_json

    chosen = _chosen(ids, every, filters)
    if not chosen:
        click.echo(f"No evaluations to compare in {_db().path}.")
        return
    comparison = line_up(chosen, by=by, baseline=baseline)
    if as_json or as_csv:
        rows = comparison.rows()
        click.echo(to_json(rows) if as_json else to_csv(rows), nl=as_json)
        return
    from rich.table import Table

    table = Table(
        "ID", "MODEL", "FRAMEWORK", "AGENT", "DATASET", "BATCH", "DEVICE", "P50 MS", "P99 MS",
        "SAMPLES/S", "THROUGHPUT x", "SPEEDUP", "METRIC", "DELTA", box=None,
    )  # fmt: skip
    for number, group in enumerate(comparison.groups):
        if number:
            table.add_section()
        for row in group:
            is_base = row["id"] == row["baseline"]
            metric = row["main_metric"]
            table.add_row(
                row["id"][:12] + (" *" if is_base else ""),
                row["model"],
                row["framework"],
                row["agent"],
                row["dataset"],
                str(row["batch_size"]),
                row["device"],
                _num(row.get("predict_p50_ms")),
                _num(row.get("predict_p99_ms")),
                _num(row["throughput"], 1),
                _num(row["throughput_ratio"], 2),
                _num(row["speedup"], 2),
                f"{metric}={row['main_metric_value']:.4f}" if metric else "-",
                "-"
                if is_base
                else f"{row['main_metric_delta']:+.4f}"
                if row["main_metric_delta"] is not None
                else "-",
            )
    print_table(table)
    click.echo(f"* baseline of its group. {comparison.by} varies within a group.")


def _chosen(ids: Sequence[str], every: bool, filters: dict[str, Any]) -> list[Any]:
    if ids:
        if any(v is not None for v in filters.values()):
            raise click.UsageError("Give evaluation IDs or filters (--model ...), not both.")
        db = _db()
        return [db.get(i) for i in ids]
    found = _select(**filters)
    if every:
        return found
    newest: dict[tuple[Any, ...], Any] = {}
    for r in found:  # oldest first: later ones replace earlier ones, keeping first-seen order
        key = (r.model, r.framework, r.agent, r.dataset, r.batch_size, r.device)
        newest.pop(key, None)
        newest[key] = r
    return sorted(newest.values(), key=lambda r: r.created)


@results.command("export")
@_filters
@click.option("--json", "as_json", is_flag=True, help="Whole results as JSON (the default).")
@click.option("--csv", "as_csv", is_flag=True, help="One flat row per evaluation as CSV.")
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (atomically) instead of printing.",
)
def export(as_json: bool, as_csv: bool, output: str | None, **filters: Any) -> None:
    """Export stored evaluations: whole results as JSON, or flat rows as CSV.

    \b
    Examples:
      forgeml results export --csv -o results.csv
      forgeml results export --model digits_cnn --json > digits.json
    """
    from forgeml.eval._results import summary_row, to_csv, to_json

    if as_json and as_csv:
        raise click.UsageError("Give --json or --csv, not both.")
    found = _select(**filters)
    text = to_csv([summary_row(r) for r in found]) if as_csv else to_json(
        [r.to_dict() for r in found]
    ) + "\n"  # fmt: skip
    if output is None:
        click.echo(text, nl=False)
        return
    from forgeml._core._files import atomic_open

    with atomic_open(Path(output)) as f:
        f.write(text)
    click.echo(f"exported {len(found)} evaluation(s) to {output}", err=True)


@results.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
def rm(ids: tuple[str, ...]) -> None:
    """Remove evaluations by id (or unique prefix).

    \b
    Example:
      forgeml results rm 3f2a9c1e
    """
    db = _db()
    full = [db.get(i).id for i in ids]  # every id checked before removing any
    for eval_id in full:
        db.remove(eval_id)
    click.echo(f"removed {len(full)} evaluation(s)")
