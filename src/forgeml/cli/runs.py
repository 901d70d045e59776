"""``forgeml runs``: list, show and compare tracked runs (``forgeml.track``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from forgeml._core._errors import CLIError
from forgeml._core._format import format_duration
from forgeml.cli._output import print_table

if TYPE_CHECKING:
    from forgeml.track import MetricPoint, RunRecord

_URI_HELP = "Tracking URI; default: MLFLOW_TRACKING_URI, else the embedded store."


@click.group()
def runs() -> None:
    """List, show and compare tracked runs.

    \b
    Examples:
      forgeml runs ls
      forgeml runs ls --experiment train --status FAILED --json
      forgeml runs show 3f2a9c1e
      forgeml runs compare 3f2a9c1e 81b0d2aa
    """


@runs.command("ls")
@click.option("--experiment", "-e", default=None, metavar="NAME", help="Only this experiment.")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["RUNNING", "FINISHED", "FAILED", "KILLED"], case_sensitive=False),
    help="Only runs with this status.",
)
@click.option("--limit", "-n", default=50, show_default=True, help="At most this many runs.")
@click.option("--uri", default=None, metavar="URI", help=_URI_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def ls(
    experiment: str | None, status: str | None, limit: int, uri: str | None, as_json: bool
) -> None:
    """List runs, newest first, with their latest metric values.

    \b
    Examples:
      forgeml runs ls
      forgeml runs ls -e train -n 5
      forgeml runs ls --json | jq '.[].run_id'
    """
    from forgeml.track import list_runs, tracking_uri

    found = list_runs(experiment, uri=uri, status=status, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    if not found:
        where = f" in experiment '{experiment}'" if experiment else ""
        click.echo(f"No runs{where} at {tracking_uri(uri)}.")
        return
    from rich.table import Table

    metric_names = sorted({k for r in found for k in r.metrics})[:6]
    table = Table("RUN", "EXPERIMENT", "NAME", "STATUS", "STARTED", "DURATION", box=None)
    for name in metric_names:
        table.add_column(name.upper(), justify="right")
    for r in found:
        table.add_row(
            r.run_id[:8],
            r.experiment,
            r.name,
            r.status,
            _started(r),
            _duration(r.duration),
            *(_number(r.metrics.get(name)) for name in metric_names),
        )
    print_table(table)


@runs.command("show")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--experiment", "-e", default=None, metavar="NAME", help="Without RUN: its newest run."
)
@click.option("--uri", default=None, metavar="URI", help=_URI_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: record, metric history.")
def show(run_id: str | None, experiment: str | None, uri: str | None, as_json: bool) -> None:
    """Show one run: status, params, metrics (last, min, max, steps), tags, artifacts.

    RUN is a run id or a unique prefix of one (at least 4 characters); without
    it, the newest run (of --experiment, if given). A failed run shows its traceback.

    \b
    Examples:
      forgeml runs show 3f2a9c1e
      forgeml runs show -e train --json
    """
    from forgeml.track import get_metrics, get_run

    if run_id is None:
        run_id = _newest(experiment, uri, 1)[0]
    record = get_run(run_id, uri=uri)
    history = get_metrics(record.run_id, uri=uri)
    artifacts = _artifacts(record.run_id, uri)
    if as_json:
        data = record.to_dict()
        data["metric_history"] = {k: [p._asdict() for p in points] for k, points in history.items()}
        data["artifacts"] = artifacts
        click.echo(json.dumps(data, indent=2))
        return
    lines = [
        ("run", record.run_id),
        ("name", record.name),
        ("experiment", f"{record.experiment} ({record.experiment_id})"),
        ("status", record.status),
        ("started", _started(record)),
        ("duration", _duration(record.duration)),
        ("artifacts", record.artifact_uri),
    ]
    git = record.tags.get("mlflow.source.git.commit")
    if git:
        branch = record.tags.get("mlflow.source.git.branch", "")
        dirty = " (dirty)" if record.tags.get("forgeml.git.dirty") == "true" else ""
        lines.append(("git", f"{git[:12]} {branch}{dirty}".strip()))
    for key in ("forgeml.host", "forgeml.slurm.job_id"):
        if key in record.tags:
            lines.append((key.rsplit(".", 1)[-1].replace("job_id", "slurm job"), record.tags[key]))
    for key, value in lines:
        click.echo(f"{key + ':':<11} {value}")
    from rich.table import Table

    if record.params:
        click.echo("params:")
        table = Table("  KEY", "VALUE", box=None)
        for key, value in record.params.items():
            table.add_row(f"  {key}", value)
        print_table(table)
    if history:
        click.echo("metrics:")
        table = Table("  KEY", "LAST", "MIN", "MAX", "STEP", "VALUES", box=None)
        for key, points in history.items():
            values = [p.value for p in points]
            last = _last(points)
            table.add_row(
                f"  {key}",
                _number(last.value),
                _number(min(values)),
                _number(max(values)),
                str(last.step),
                str(len(points)),
            )
        print_table(table)
    if artifacts:
        click.echo("files:")
        for path in artifacts:
            click.echo(f"  {path}")
    trace = record.tags.get("forgeml.traceback")
    if record.status == "FAILED" and trace:
        click.echo("traceback:")
        click.echo(trace.rstrip("\n"))


@runs.command("compare")
@click.argument("run_ids", nargs=-1, metavar="[RUN]...")
@click.option(
    "--experiment", "-e", default=None, metavar="NAME", help="Without RUNs: its newest runs."
)
@click.option("--limit", "-n", default=5, show_default=True, help="Without RUNs: this many.")
@click.option("--all", "show_all", is_flag=True, help="Also params that are the same in all runs.")
@click.option("--uri", default=None, metavar="URI", help=_URI_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: params and metrics by run.")
def compare(
    run_ids: tuple[str, ...],
    experiment: str | None,
    limit: int,
    show_all: bool,
    uri: str | None,
    as_json: bool,
) -> None:
    """Compare runs side by side: params that differ and the last value of every metric.

    RUNs are run ids or unique prefixes; without them, the newest runs (of
    --experiment, if given).

    \b
    Examples:
      forgeml runs compare 3f2a9c1e 81b0d2aa
      forgeml runs compare 3f2a9c1e 81b0d2aa 5d1c --all --json
      forgeml runs compare -e train -n 3
    """
    from forgeml.track import get_run

    chosen = list(run_ids) or _newest(experiment, uri, limit)
    records = [get_run(r, uri=uri) for r in chosen]
    ids = [r.run_id for r in records]
    param_keys = sorted({k for r in records for k in r.params})
    params: dict[str, dict[str, str | None]] = {
        k: {r.run_id: r.params.get(k) for r in records}
        for k in param_keys
        if show_all or len({r.params.get(k) for r in records}) > 1
    }
    metric_keys = sorted({k for r in records for k in r.metrics})
    metrics: dict[str, dict[str, float | None]] = {
        k: {r.run_id: r.metrics.get(k) for r in records} for k in metric_keys
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "runs": [
                        {k: v for k, v in r.to_dict().items() if k not in ("params", "metrics")}
                        for r in records
                    ],
                    "params": params,
                    "metrics": metrics,
                },
                indent=2,
            )
        )
        return
    from rich.table import Table

    table = Table("", *(i[:8] for i in ids), box=None)
    table.add_row("experiment", *(r.experiment for r in records))
    table.add_row("name", *(r.name for r in records))
    table.add_row("status", *(r.status for r in records))
    for key, texts in params.items():
        table.add_row(key, *(_text(texts[i]) for i in ids))
    for key, numbers in metrics.items():
        table.add_row(key, *(_number(numbers[i]) for i in ids))
    print_table(table)
    if not params and len(records) > 1:
        click.echo("(the runs have the same params; --all lists them)")


# ----------------------------------------------------------------------------- helpers


def _newest(experiment: str | None, uri: str | None, count: int) -> list[str]:
    from forgeml.track import list_runs, tracking_uri

    found = list_runs(experiment, uri=uri, limit=count)
    if not found:
        where = f" in experiment '{experiment}'" if experiment else ""
        raise CLIError(f"No runs{where} at {tracking_uri(uri)}.")
    return [r.run_id for r in found]


def _artifacts(run_id: str, uri: str | None) -> list[str]:
    from forgeml.track import _store

    client = _store.client(_store.tracking_uri(uri))
    found: list[str] = []

    def walk(path: str | None) -> None:
        for item in client.list_artifacts(run_id, path):
            if item.is_dir:
                walk(item.path)
            else:
                found.append(item.path)

    try:
        walk(None)
    except Exception:  # artifacts out of reach: show the rest of the run anyway
        return []
    return sorted(found)


def _last(points: list[MetricPoint]) -> MetricPoint:
    return max(points, key=lambda p: (p.step, p.timestamp))


def _started(record: RunRecord) -> str:
    started = record.started
    if started is None:
        return "-"
    return started.isoformat(sep=" ", timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
